"""The enrolment database: enrol speakers, verify a claimed identity, identify a voice.

``speaker_db`` (:class:`SpeakerDB`, the decision rule), ``store`` (its SQLite layer), ``index`` and
``sync`` (the speaker index file beside the DB and how writers keep it in step), ``rules`` (score
rules over a speaker's references), ``trials`` (``verify --trials``).
"""

from speakerid.enroll.speaker_db import SpeakerDB

__all__ = ["SpeakerDB"]  # the stable public name (docs/ARCHITECTURE.md, "Python API")
