"""A 1-D CNN for signals (audio-like clips, sensor traces): input [B, C, L], output a 1-D feature
map [B, C', L'].

``features`` picks the front end:

- ``"spectrogram"`` (default): a log-magnitude STFT computed inside the module (``torch.stft``,
  Hann window of ``n_fft`` samples stored as a buffer, ``hop_length`` between frames, centred
  frames), always in float32. The ``n_fft // 2 + 1`` frequency bins of every input channel become
  channels: [B, C, L] -> [B, C * (n_fft // 2 + 1), 1 + L // hop_length]. The blocks then convolve
  over time (frames).
- ``"waveform"``: the blocks convolve the raw samples. The first conv is wide and strided, kernel
  ``4 * kernel_size`` with stride 4 (a learned filter bank that quarters the length), so
  ``L = 2048`` becomes 512 before the usual blocks.

``time_channel=True`` appends one channel holding the time position (-1 at the start, 1 at the end)
to the first block's input. The blocks are translation-equivariant and the scalar heads average
over time, so without it *when* something happens (e.g. the tones ``onset``) is nearly invisible
to them.

Blocks are conv1d-BN-ReLU with ``kernel_size`` (odd) taps; every block after the first halves the
length, so ``channels=[32, 64, 128]`` gives 128 x 9 maps for 2048-sample clips (spectrogram,
hop 64) or 128 x 128 (waveform). Stages: one per block; the front end joins the first block.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from ...config.params import Check, Dropout, Len, PosInt, Range
from ...data.base import InputSpec
from ...errors import ConfigError, Problem
from ...registry import BACKBONES
from ..base import Backbone, node_values, probe_shape


class LogSpectrogram(nn.Module):
    """[B, C, L] -> log-magnitude STFT [B, C * (n_fft // 2 + 1), 1 + L // hop_length]."""

    def __init__(self, n_fft: int, hop_length: int, eps: float = 1e-4):
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.eps = eps
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, n = x.shape
        with torch.autocast(device_type=x.device.type, enabled=False):
            spec = torch.stft(
                x.reshape(b * c, n).float(),
                self.n_fft,
                self.hop_length,
                window=self.window,
                center=True,
                return_complex=True,
            )
            spec = torch.log(spec.abs() + self.eps)
        return spec.reshape(b, c * spec.shape[1], spec.shape[2])

    def extra_repr(self) -> str:
        return f"n_fft={self.n_fft}, hop_length={self.hop_length}"


class TimeChannel(nn.Module):
    """[B, C, T] -> [B, C + 1, T]: appends the time position, from -1 (first) to 1 (last)."""

    def forward(self, x: Tensor) -> Tensor:
        t = torch.linspace(-1.0, 1.0, x.shape[-1], device=x.device, dtype=x.dtype)
        return torch.cat([x, t.expand(x.shape[0], 1, -1)], dim=1)


def _block(c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm1d(c_out),
        nn.ReLU(inplace=True),
    )


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: the conv width: odd, since the blocks pad symmetrically
Kernel = Annotated[int, Range(ge=1), Check(lambda k: k % 2 == 1, "and odd (the blocks pad symmetrically)")]


@BACKBONES.register("signal_cnn")
class SignalCNN(Backbone):
    feature_map = True
    has_stages = True
    modalities = ("signal",)

    def __init__(
        self,
        input_spec: InputSpec,
        *,
        features: Literal["spectrogram", "waveform"] = "spectrogram",
        n_fft: Annotated[int, Range(ge=8)] = 256,
        hop_length: PosInt = 64,
        channels: Annotated[list[PosInt], Len(min=1)] = (32, 64, 128),
        kernel_size: Kernel = 3,
        dropout: Dropout = 0.0,
        time_channel: bool = False,
    ):
        super().__init__()
        problems = self.check({"features": features, "n_fft": n_fft, "hop_length": hop_length}, input_spec)
        if problems:
            raise ConfigError(problems)
        c_in = input_spec.shape[0]
        self.features = features
        front: list[nn.Module] = []
        pad = kernel_size // 2
        blocks: list[nn.Module] = []
        if features == "spectrogram":
            front.append(LogSpectrogram(n_fft, hop_length))
            c_in = c_in * (n_fft // 2 + 1)
        if time_channel:
            front.append(TimeChannel())
            c_in += 1
        self.front = None if not front else front[0] if len(front) == 1 else nn.Sequential(*front)
        if features == "spectrogram":
            blocks.append(_block(c_in, channels[0], kernel_size, 1, pad))
        else:  # a wide stride-4 first conv: kernel 4 * kernel_size quarters the length
            blocks.append(_block(c_in, channels[0], 4 * kernel_size, 4, 2 * kernel_size - 2))
        for c_prev, c in zip(channels[:-1], channels[1:]):
            blocks.append(_block(c_prev, c, kernel_size, 2, pad))
        self.blocks = nn.ModuleList(blocks)
        self.drop = nn.Dropout1d(dropout) if dropout > 0 else None
        self.out_shape = probe_shape(self, tuple(input_spec.shape))

    @classmethod
    def check(cls, node: dict, input_spec: InputSpec) -> list:
        """What the keys' declared domains cannot say: the input must be a signal, the STFT
        window must fit the signal and the hop the window."""
        v = node_values(cls, node)
        features, n_fft, hop_length = v["features"], v["n_fft"], v["hop_length"]
        bad = []
        shape = tuple(input_spec.shape)
        if len(shape) != 2:
            bad.append(
                Problem(
                    "backbone.name",
                    f"signal_cnn needs 1-D signal inputs of shape (channels, length); "
                    f"input {input_spec.name!r} ({input_spec.modality}) has shape {shape}",
                    "signal_cnn",
                    "inputs of per-sample shape (C, L), e.g. data=tones",
                    "use signal_cnn only for signal inputs (small_cnn or a torchvision model for images, "
                    "mlp for tabular data)",
                )
            )
        elif features == "spectrogram" and _is_int(n_fft) and n_fft > shape[1]:
            bad.append(
                Problem(
                    "backbone.n_fft",
                    f"the STFT window is longer than the signal ({shape[1]} samples)",
                    n_fft,
                    f"an integer in [8, {shape[1]}]",
                    f"set backbone.n_fft to at most {shape[1]}",
                )
            )
        if _is_int(n_fft) and _is_int(hop_length) and hop_length > n_fft:
            bad.append(
                Problem(
                    "backbone.hop_length",
                    "the hop between STFT frames must be in [1, n_fft]",
                    hop_length,
                    "an integer in [1, backbone.n_fft]",
                    "set backbone.hop_length to n_fft // 4",
                )
            )
        return bad

    def stages(self) -> list[tuple[str, nn.Module]]:
        """One stage per conv block; the front end (spectrogram, time channel) joins the first
        block and a trailing dropout the last one."""
        mods: list[list[nn.Module]] = [[b] for b in self.blocks]
        if self.front is not None:
            mods[0].insert(0, self.front)
        if self.drop is not None:
            mods[-1].append(self.drop)
        return [(f"block{i + 1}", m[0] if len(m) == 1 else nn.Sequential(*m)) for i, m in enumerate(mods)]

    def forward(self, x: Tensor) -> Tensor:
        if self.front is not None:
            x = self.front(x)
        for block in self.blocks:
            x = block(x)
        return x if self.drop is None else self.drop(x)
