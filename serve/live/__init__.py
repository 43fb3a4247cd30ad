"""Live transcription over WebSockets: SageMaker bidirectional streaming and the OpenAI Realtime API."""
