"""From a request's audio to its transcription: options, decoding, cutting, scheduling, results."""
