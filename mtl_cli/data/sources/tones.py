"""Embedded, procedurally generated audio-like clips ("tones"): no download.

Each clip is a 1-D waveform (input ``signal``, shape 1 x ``length``) holding one *main* sound event
on white Gaussian noise (std ``noise``), sometimes (half of the clips) with a weaker, shorter
distractor tone at an unrelated frequency. The event starts at a random onset, lasts 25% to 50% of
the clip and fades in and out smoothly (raised-cosine edges, 15% of the event each); it has a
random phase and a peak amplitude ~ U(0.2, 1.0). Frequencies are fractions of ``sample_rate``:
the usable range is 0.025 to 0.3 of it (200 Hz to 2400 Hz at 8 kHz), on a log (musical) scale.
Targets:

- ``waveform``: the event's kind: classification, 4 classes: ``tone`` (steady), ``up_chirp`` and
  ``down_chirp`` (exponential sweeps over 0.75 to 1.25 octave, centred on the event's frequency),
  ``am_tone`` (steady carrier, amplitude modulated with depth 0.6 to 1 at 0.012 to 0.02 of the
  sample rate, 96 Hz to 160 Hz at 8 kHz: sidebands a few spectrogram bins from the carrier)
- ``band``: the event's centre frequency in the low, mid or high third of the usable range (log
  scale): classification, 3 classes. Centres keep 10% of a band's width away from its edges.
- ``pitch``: the centre frequency normalised to [0, 1] over the usable range (log scale): regression
- ``loud``: peak amplitude above 0.6 (the median): binary
- ``onset``: the event's start as a fraction of the clip, in [0, 0.75]: regression

Generation is vectorised over the whole split, so thousands of clips take well under a second.
The seed fixes everything: same seed, same data, on any machine.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch

from ...config.params import NonNeg, PosInt, Range, Seed, Unit
from ...errors import ConfigError
from ...registry import SOURCES
from ..base import (
    DataSource,
    DataSpec,
    InMemoryDataset,
    InputSpec,
    TargetSpec,
    missing_label_masks,
    missing_label_problems,
)

WAVEFORMS = ("tone", "up_chirp", "down_chirp", "am_tone")
BANDS = ("low", "mid", "high")
F_LO, F_HI = 0.025, 0.3  # usable centre-frequency range, as fractions of the sample rate
AMP_LO, AMP_HI = 0.2, 1.0  # main-event peak amplitude range; "loud" is above the midpoint
TARGETS = ("waveform", "band", "pitch", "loud", "onset")


def pitch_to_freq(pitch: torch.Tensor | float, sample_rate: float = 1.0):
    """Frequency (in units of ``sample_rate``) of a normalised pitch in [0, 1] (log scale)."""
    return sample_rate * F_LO * (F_HI / F_LO) ** pitch


def _envelope(t: torch.Tensor, start: torch.Tensor, dur: torch.Tensor) -> torch.Tensor:
    """Smooth event envelopes [N, L]: 0 outside, raised-cosine edges (15% each side), 1 inside."""
    tau = (t[None] - start[:, None]) / dur[:, None]  # position in the event, [0, 1] inside it
    edge = 0.15
    ramp = torch.clamp(torch.minimum(tau, 1 - tau) / edge, 0.0, 1.0)
    return torch.sin(0.5 * math.pi * ramp) ** 2 * ((tau >= 0) & (tau <= 1))


def generate(n: int, length: int, noise: float, seed: int, distractor: float = 0.5) -> dict:
    """Generate ``n`` clips; returns the signals [n, 1, length], all targets and ``meta`` (per-clip
    event parameters, for tests and plots: frequencies are fractions of the sample rate)."""
    g = torch.Generator().manual_seed(seed)

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)

    t = torch.arange(length, dtype=torch.float32)
    kind = torch.randint(0, len(WAVEFORMS), (n,), generator=g)
    band = torch.randint(0, len(BANDS), (n,), generator=g)
    pitch = (band + u(0.1, 0.9)) / len(BANDS)
    fc = pitch_to_freq(pitch)
    amp = u(AMP_LO, AMP_HI)
    dur = u(0.25, 0.5)
    onset = u(0.0, 1.0) * (1 - dur)
    phase0 = u(0.0, 1.0)  # in cycles
    span = u(0.75, 1.25)  # chirp sweep in octaves
    depth = u(0.6, 1.0)  # AM depth
    am_rate = u(0.012, 0.02)  # AM frequency, cycles per sample
    am_phase = u(0.0, 2 * math.pi)
    start, n_dur = (onset * length).float(), (dur * length).float()
    tau = ((t[None] - start[:, None]) / n_dur[:, None]).clamp_(0.0, 1.0)
    sweep = torch.where(kind == 1, span, torch.where(kind == 2, -span, torch.zeros_like(span)))
    # instantaneous frequency [n, L] (cycles per sample); phase in cycles, kept in [0, 1) for precision
    freq = fc.float()[:, None] * torch.exp2(sweep.float()[:, None] * (tau - 0.5))
    phase = torch.cumsum(freq, dim=1).add_(phase0.float()[:, None]).frac_()
    env = _envelope(t, start, n_dur)
    am = (kind == 3).float()[:, None] * depth.float()[:, None]
    env *= 1 - am * 0.5 * (1 - torch.cos(2 * math.pi * am_rate.float()[:, None] * t[None] + am_phase.float()[:, None]))
    x = (amp.float()[:, None] * env).mul_(torch.sin(2 * math.pi * phase))
    # distractor: a steady tone anywhere in the usable range, 10-25% of the clip, 10-30% as loud
    d_on = torch.rand(n, generator=g) < distractor
    d_freq = pitch_to_freq(u(0.0, 1.0))
    d_dur = u(0.1, 0.25) * length
    d_start = u(0.0, 1.0) * (length - d_dur)
    d_amp = (amp * u(0.1, 0.3) * d_on).float()
    d_phase = (d_freq.float()[:, None] * t[None]).add_(u(0.0, 1.0).float()[:, None]).frac_()
    x += (d_amp[:, None] * _envelope(t, d_start.float(), d_dur.float())).mul_(torch.sin(2 * math.pi * d_phase))
    x += noise * torch.randn(n, length, generator=g)
    return {
        "signal": x[:, None],
        "waveform": kind,
        "band": band,
        "pitch": pitch.float(),
        "loud": (amp > (AMP_LO + AMP_HI) / 2).float(),
        "onset": onset.float(),
        "meta": {"freq": fc, "amp": amp, "duration": dur, "span": sweep, "distractor": d_on, "distractor_freq": d_freq},
    }


@SOURCES.register("tones")
class TonesSource(DataSource):
    """Seeded synthetic sound events; each split drawn with its own seed derived from ``seed``.

    ``missing_labels`` maps a target to the fraction of samples whose label is dropped (masked),
    to exercise and demonstrate missing-label training.
    """

    def __init__(
        self,
        train_size: PosInt = 2000,
        val_size: PosInt = 500,
        test_size: PosInt = 500,
        length: Annotated[int, Range(ge=256)] = 2048,  # shorter clips cannot hold a sound event
        sample_rate: PosInt = 8000,  # samples per second
        noise: NonNeg = 0.1,  # a standard deviation
        seed: Seed = 0,
        missing_labels: dict[str, Unit] | None = None,
    ):
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        bad = missing_label_problems(dict(missing_labels or {}), TARGETS, "tones")
        if bad:
            raise ConfigError(bad)
        self.length = length
        self.sample_rate = sample_rate
        self.noise = noise
        self.seed = seed
        self.missing_labels = dict(missing_labels or {})

    def describe(self) -> DataSpec:
        edges = [float(pitch_to_freq(i / len(BANDS), self.sample_rate)) for i in range(len(BANDS) + 1)]
        return DataSpec(
            inputs={"signal": InputSpec("signal", (1, self.length), "signal")},
            targets={
                "waveform": TargetSpec("waveform", "classification", (), len(WAVEFORMS), list(WAVEFORMS)),
                "band": TargetSpec("band", "classification", (), len(BANDS), list(BANDS)),
                "pitch": TargetSpec("pitch", "regression", ()),
                "loud": TargetSpec("loud", "binary", ()),
                "onset": TargetSpec("onset", "regression", ()),
            },
            artifacts={"sample_rate": self.sample_rate, "band_edges_hz": edges},
        )

    def estimated_bytes(self) -> int:
        """The splits' signals as stored (float32) plus the temporaries of drawing the largest
        split (about 32 bytes per sample of signal)."""
        return sum(self.sizes.values()) * 4 * self.length + max(self.sizes.values()) * 32 * self.length

    def load(self) -> dict[str, InMemoryDataset]:
        out = {}
        for i, split in enumerate(("train", "val", "test")):
            seed = self.seed * 1000 + 500 + i  # disjoint streams per split
            d = generate(self.sizes[split], self.length, self.noise, seed)
            d.pop("meta")
            signal = d.pop("signal")
            masks = missing_label_masks(self.sizes[split], self.missing_labels, seed + 7919)
            out[split] = InMemoryDataset({"signal": signal}, d, masks)
        return out
