"""Make the bank of room impulse responses the ``room`` channel draws from (``ser_core/assets/rooms.npz``).

    python scripts/make_rooms.py [--rooms 40] [--seed 0]

Each room is a shoebox of random size (3-9 x 3-7 x 2.4-3.5 m) with walls absorbing so that its Sabine RT60 is
drawn uniformly from 0.2-0.7 s, a talker and a microphone at random places 0.7-3 m apart, simulated with
pyroomacoustics (image sources to order 3, ray tracing for the late tail, air absorption) at 16 kHz. Each
response is cut where it has decayed by 60 dB, scaled to a direct-path peak of 1 and stored as float16, with
its measured RT60. Deterministic for a seed; pyroomacoustics (MIT) is needed only here, not at run time.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "ser_core" / "assets" / "rooms.npz"
SR = 16000


def room(rng) -> tuple[np.ndarray, float]:
    import pyroomacoustics as pra

    while True:
        dims = np.array([rng.uniform(3, 9), rng.uniform(3, 7), rng.uniform(2.4, 3.5)])
        src, mic = (np.array([rng.uniform(0.5, d - 0.5) for d in dims[:2]] + [rng.uniform(1.0, 1.9)])
                    for _ in range(2))
        if 0.7 <= np.linalg.norm(src - mic) <= 3.0:
            break
    absorption, _ = pra.inverse_sabine(rng.uniform(0.2, 0.7), dims)
    shoebox = pra.ShoeBox(dims, fs=SR, materials=pra.Material(absorption), max_order=3, ray_tracing=True,
                          air_absorption=True)
    shoebox.set_ray_tracing(n_rays=3000)
    shoebox.add_source(src)
    shoebox.add_microphone(mic)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shoebox.compute_rir()
        rt60 = float(shoebox.measure_rt60()[0][0])
    h = np.asarray(shoebox.rir[0][0], dtype=np.float64)
    onset = int(np.argmax(np.abs(h)))
    energy = np.cumsum(h[::-1] ** 2)[::-1]  # energy left after each sample (Schroeder)
    end = int(np.searchsorted(-energy, -energy[onset] * 1e-6))  # -60 dB
    h = h[max(0, onset - 16):max(end, onset + 16)]
    return (h / np.max(np.abs(h))).astype(np.float16), rt60


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rooms", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    rirs, rt60s = zip(*(room(rng) for _ in range(a.rooms)))
    lengths = np.array([len(h) for h in rirs])
    flat = np.concatenate(rirs)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, rirs=flat, lengths=lengths, rt60=np.array(rt60s, dtype=np.float32), sr=SR)
    print(f"{a.rooms} rooms, RT60 {min(rt60s):.2f}-{max(rt60s):.2f} s (median {np.median(rt60s):.2f}), "
          f"{OUT.stat().st_size / 1e6:.2f} MB -> {OUT.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
