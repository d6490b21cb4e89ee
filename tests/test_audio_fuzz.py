"""Property-based fuzzing of the audio decoder with hostile WAV and FLAC headers (hypothesis).

Every header field a decoder trusts -- channels, bits per sample, sample rate, byte rate, block align, the RIFF,
fmt and data chunk sizes, FLAC's STREAMINFO block sizes, frame sizes, rate, channels, bits and total length --
takes absurd values (0, the field's maximum, anything in between), the file may be cut anywhere, and bytes of
its first 64 may be overwritten. ``load_audio`` must then return a usable signal or raise an ``AudioError``
whose message is one sentence naming no path: never another exception (before: ``ValueError: Invalid layout:
0 channels``, ``AttributeError: 'AudioStream' object has no attribute 'rate'``: 64 of 6,000 mutations).
"""
from __future__ import annotations

import io

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import REPO, one_sentence, tone, wav_bytes
from ser_core.audio import load_audio
from ser_core.errors import AudioError

FUZZ = settings(max_examples=1500, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])  # the same cases on every run (CI)


def _flac() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(), 16000, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


FLAC = _flac()  # "fLaC", STREAMINFO's block header (4 bytes), STREAMINFO (34 bytes), more metadata, frames


def flac_bytes(*, min_block, max_block, min_frame, max_frame, rate, channels, bits, total, md5) -> bytes:
    """The bundled tone's FLAC with a STREAMINFO saying what it is told (its frames unchanged)."""
    fields = ((min_block, 16), (max_block, 16), (min_frame, 24), (max_frame, 24), (rate, 20), (channels - 1, 3),
              (bits - 1, 5), (total, 36), (md5, 128))
    value = 0
    for v, width in fields:
        value = (value << width) | (v & ((1 << width) - 1))
    return FLAC[:8] + value.to_bytes(34, "big") + FLAC[42:]


def some(width: int, *notable: int):
    """A field of ``width`` bits: its edges and ``notable`` values more often than chance would pick them."""
    return st.one_of(st.sampled_from([0, 1, (1 << width) - 1, *notable]), st.integers(0, (1 << width) - 1))


def decoded_or_refused_in_one_sentence(data: bytes):
    try:
        y = load_audio(data)
    except AudioError as exc:
        one_sentence(str(exc))
        assert str(REPO) not in str(exc) and "/tmp" not in str(exc), str(exc)
        return
    assert y.dtype == np.float32 and y.ndim == 1 and y.size and np.isfinite(y).all()


@FUZZ
@given(fmt=some(16, 3, 0xFFFE, 2, 0x55), channels=some(16, 2, 8, 255), rate=some(32, 8000, 16000, 48000, 384_001),
       bits=some(16, 8, 16, 24, 32, 64), byte_rate=st.one_of(st.none(), some(32)),
       align=st.one_of(st.none(), some(16, 2, 4)), fmt_size=some(32, 16, 18, 40),
       extra=st.sampled_from([b"", b"\0\0", bytes(24)]), riff_size=st.one_of(st.none(), some(32)),
       data_size=st.one_of(st.none(), some(32)), samples=st.integers(0, 2000))
def test_any_wav_header_is_decoded_or_refused_in_one_sentence(**header):
    decoded_or_refused_in_one_sentence(wav_bytes(**header))


@FUZZ
@given(min_block=some(16, 4096), max_block=some(16, 4096), min_frame=some(24), max_frame=some(24),
       rate=some(20, 8000, 16000, 48000, 655_350), channels=st.integers(1, 8), bits=st.integers(1, 32),
       total=some(36, 1600, 1599, 1601), md5=st.sampled_from([0, (1 << 128) - 1]), cut=st.integers(0, len(FLAC)))
def test_any_flac_streaminfo_is_decoded_or_refused_in_one_sentence(cut, **streaminfo):
    data = flac_bytes(**streaminfo)
    decoded_or_refused_in_one_sentence(data[:cut] if cut > 8 else data)


@FUZZ
@given(kind=st.sampled_from(["wav", "flac"]), edits=st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)),
                                                             min_size=1, max_size=6))
def test_any_overwritten_header_byte_is_decoded_or_refused_in_one_sentence(kind, edits):
    data = bytearray(wav_bytes() if kind == "wav" else FLAC)
    for position, value in edits:
        data[position] = value
    decoded_or_refused_in_one_sentence(bytes(data))
