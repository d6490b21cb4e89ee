"""Feature sets other packages compute: openSMILE's eGeMAPS and a pretrained speaker encoder's states, run in
numpy from the weights resemblyzer ships (checked against PyTorch's own LSTM with the same weights)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ser_core.audio import load_audio
from ser_core.features import compute_file, get_feature_set

REPO = Path(__file__).resolve().parents[1]
CLIP = "samples/ravdess/Actor_01/03-01-05-01-01-01-01.flac"


def test_egemaps_gives_its_88_named_functionals():
    fs = get_feature_set("egemaps")
    x = compute_file(CLIP, fs)
    assert x.shape == fs.shape == (88,) and np.isfinite(x).all() and np.abs(x).sum() > 0
    assert len(fs.feature_names()) == 88 and fs.feature_names()[0].startswith("F0semitone")


def test_the_speaker_encoder_is_pytorchs_lstm_with_the_wheels_weights_in_numpy_too():
    import torch

    from ser_core.external_features import (ENCODER_HIDDEN, encoder_mel, encoder_states, encoder_states_numpy,
                                            encoder_weights)

    mel = encoder_mel(load_audio(CLIP, sr=16000))
    lstm = torch.nn.LSTM(40, ENCODER_HIDDEN, 3, batch_first=True)
    lstm.load_state_dict({k.removeprefix("lstm."): torch.from_numpy(v) for k, v in encoder_weights().items()
                          if k.startswith("lstm.")})
    with torch.no_grad():
        out, _ = lstm(torch.from_numpy(mel[None]))
    for states in (encoder_states(mel), encoder_states_numpy(mel)):  # torch where installed; numpy without it
        assert len(states) == 3 and states[-1].shape == (len(mel), ENCODER_HIDDEN)
        assert np.abs(out[0].numpy() - states[-1]).max() < 1e-4


def test_a_set_of_parts_is_its_parts_side_by_side():
    both = compute_file(CLIP, "expressive_egemaps")
    assert np.allclose(both, np.concatenate([compute_file(CLIP, "expressive"), compute_file(CLIP, "egemaps")]))
    assert get_feature_set("expressive_egemaps").feature_names()[-1].startswith("egemaps:")
    # the sets defined before extractors and parts existed keep their cache keys
    assert not {"extractor", "parts", "denoise"} & set(get_feature_set("expressive").params())


def test_voice_encoder_features_are_means_spreads_and_a_unit_embedding():
    x = compute_file(CLIP, "voice_encoder")
    assert x.shape == (1792,) and np.isfinite(x).all()
    assert np.linalg.norm(x[-256:]) == pytest.approx(1.0, abs=1e-4) and (x[-256:] >= 0).all()


@pytest.mark.parametrize("engine", ["torch", "numpy"])
def test_a_long_recording_runs_through_the_encoder_a_block_at_a_time_with_the_same_features(monkeypatch, engine):
    """Blocks of 100 frames (the LSTMs' states carried over, the statistics accumulated) give the features of the
    recording in one piece: a long recording's memory is one block's, its features are the whole's."""
    import ser_core.external_features as ef
    import ser_core.features as features

    if engine == "numpy":
        monkeypatch.setattr(ef, "_encoder_step", ef._numpy_step)
    else:
        assert ef.use_torch()  # the LSTM on PyTorch from here on
    y = np.tile(load_audio(CLIP, sr=16000), 2)  # 6.9 s, 346 frames
    whole, whole_mel = ef._voice_encoder(y, 16000), ef.encoder_mel(y)
    monkeypatch.setattr(features, "BLOCK_FRAMES", 100)
    mel = list(ef.encoder_mel_blocks(y, 16000))
    assert [len(m) for m in mel] == [100, 100, 100, 46]
    assert np.allclose(np.concatenate(mel), whole_mel, rtol=1e-5, atol=1e-9)
    blocks = ef._voice_encoder(y, 16000)
    assert np.allclose(blocks, whole, atol=2e-5), np.abs(blocks - whole).max()


@pytest.mark.slow
def test_opensmile_still_extracts_after_a_keras_model_was_created():
    """TensorFlow loaded before openSMILE's native library made its first extraction abort the process
    ("malloc(): invalid size"); creating a Keras model loads openSMILE first."""
    import subprocess
    import sys

    code = ("from ser_core.models import create_model; create_model('mlp_tf'); "
            "from ser_core.features import compute_file; print(compute_file(%r, 'egemaps').shape)" % CLIP)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("(88,)"), (proc.returncode, proc.stderr[-1500:])


@pytest.mark.slow
def test_a_prediction_runs_the_encoder_without_loading_pytorch_and_a_corpus_loads_it():
    """`predict --model svm` (the speaker encoder's states) answers without importing torch (330 MB and 1-2 s
    less); computing a corpus's features loads it (its LSTM is twice as fast there)."""
    import subprocess
    import sys

    code = ("import sys; from ser_core.cli import main; "
            "rc = main(['predict', '--model', 'svm', '--models-dir', 'trained_models', %r]); "
            "print(rc, 'torch' in sys.modules); "
            "from ser_core.features import compute_files; compute_files([%r], 'voice_encoder', cache=False, "
            "n_jobs=1, progress=False); print('torch' in sys.modules)" % (CLIP, CLIP))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert proc.stdout.split()[-3:] == ["0", "False", "True"], proc.stdout
