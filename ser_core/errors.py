"""The library's own exceptions.

Every error a user can cause (a wrong folder, a bad file, a missing model) is a subclass of
:class:`SERError` whose message is one plain sentence saying what is wrong and what to do. The command line
prints that sentence and exits non-zero; the app shows it on the page. Anything else is a bug.
"""


class SERError(Exception):
    """Base class for user-facing errors of ser_core."""


class ConfigError(SERError, ValueError):
    """An unknown name or an invalid option (feature set, model, split, parameter)."""


# -- audio -------------------------------------------------------------------------------------------------
class AudioError(SERError):
    """The audio could not be turned into a usable signal."""


class UnreadableAudioError(AudioError):
    """Not an audio file, an unsupported container, or a corrupt header."""


class EmptyAudioError(AudioError):
    """The file is empty or decodes to zero samples."""


class InvalidSamplesError(AudioError):
    """The signal contains NaN or infinite samples."""


class SilentAudioError(AudioError):
    """The clip holds no audible speech (all samples below the silence threshold)."""


class AudioTooShortError(AudioError):
    """Less speech than a model needs."""


class AudioTooLongError(AudioError):
    """Longer than the configured maximum duration."""


class AudioLimitError(AudioError):
    """Beyond what the server decodes: too many samples (frames x channels), an absurd sample rate, too large an
    upload. Checked from the header before decoding, and again while decoding (a header may lie)."""


class LowSampleRateError(AudioError):
    """A sample rate too low to hold speech (a 1 Hz header): a verdict of "no speech", not a broken file."""


# -- data --------------------------------------------------------------------------------------------------
class CorpusError(SERError):
    """A folder or CSV that is not a supported corpus, or a corpus without labels."""


class OutsideRootsError(CorpusError):
    """A path outside the data folders the server may read (``ser_core.roots``); says nothing of its target."""


class UserPathError(CorpusError):
    """A path that can name no file: a control character, too long, not text the file system can hold, or
    ``~user`` of no such user (``ser_core.roots.user_path``); the refusal says nothing about the server."""


class DownloadError(SERError):
    """A dataset or weights download failed (offline, bad checksum, bad archive)."""


# -- models ------------------------------------------------------------------------------------------------
class ModelError(SERError):
    """A model could not be built, trained, saved or loaded."""


class ModelNotFoundError(ModelError):
    """No saved model or registry entry of that name."""
