"""PyTorch definition of the Whisper encoder + CTC head, used to build, train and export.

Parameter names follow Hugging Face's `WhisperEncoder` (so PhoWhisper-CTC checkpoints and
transformers' model load unchanged). Two things differ from transformers, both needed to
serve variable-length windows in one batch:

- any input length up to 3000 mel frames (30 s): the positional table is sliced to the
  input length instead of demanding exactly 3000 frames;
- a per-item `lengths` input: attention ignores padded keys and the head zeroes padded
  frames, so a window's output is the same alone or batched with longer windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MAX_MEL_FRAMES = 3000  # 30 s at 100 mel frames/s; Whisper's positional table covers 1500 frames
_NEG_INF = -1e9  # additive mask value; finite so softmax stays NaN-free in every precision


@dataclass(frozen=True)
class EncoderDims:
    n_mels: int = 80
    d_model: int = 512
    n_heads: int = 8
    n_layers: int = 6
    ffn_dim: int = 2048
    n_ctx: int = 1500  # encoder frames in 30 s

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], n_heads: int) -> EncoderDims:
        d_model, n_mels, _ = sd["conv1.weight"].shape
        n_layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
        return cls(
            n_mels=n_mels,
            d_model=d_model,
            n_heads=n_heads,
            n_layers=n_layers,
            ffn_dim=sd["layers.0.fc1.weight"].shape[0],
            n_ctx=sd["embed_positions.weight"].shape[0],
        )


class _Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

        q = heads(self.q_proj(x) * (self.head_dim**-0.5))
        k, v = heads(self.k_proj(x)), heads(self.v_proj(x))
        scores = q @ k.transpose(-1, -2) + key_bias  # key_bias: [B, 1, 1, T]
        out = scores.softmax(dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class _EncoderLayer(nn.Module):
    def __init__(self, dims: EncoderDims) -> None:
        super().__init__()
        self.self_attn = _Attention(dims.d_model, dims.n_heads)
        self.self_attn_layer_norm = nn.LayerNorm(dims.d_model)
        self.fc1 = nn.Linear(dims.d_model, dims.ffn_dim)
        self.fc2 = nn.Linear(dims.ffn_dim, dims.d_model)
        self.final_layer_norm = nn.LayerNorm(dims.d_model)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), key_bias)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class WhisperEncoder(nn.Module):
    def __init__(self, dims: EncoderDims) -> None:
        super().__init__()
        self.dims = dims
        self.conv1 = nn.Conv1d(dims.n_mels, dims.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(dims.d_model, dims.d_model, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(dims.n_ctx, dims.d_model)
        self.layers = nn.ModuleList(_EncoderLayer(dims) for _ in range(dims.n_layers))
        self.layer_norm = nn.LayerNorm(dims.d_model)

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """features [B, n_mels, T] (T even), lengths [B] in mel frames (even).

        Returns the output of every layer (1..n; the last one after the final LayerNorm, as
        in transformers' hidden_states[1:]) and the frame mask [B, T/2] (1.0 = real frame).
        """
        x = F.gelu(self.conv1(features))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        n_frames = x.shape[1]
        x = x + self.embed_positions.weight[:n_frames]
        frame_mask = torch.arange(n_frames, device=x.device)[None, :] < (lengths[:, None] // 2)
        frame_mask = frame_mask.to(x.dtype)
        key_bias = ((1.0 - frame_mask) * _NEG_INF)[:, None, None, :]
        outputs = []
        for layer in self.layers:
            x = layer(x, key_bias)
            outputs.append(x)
        outputs[-1] = self.layer_norm(x)
        return outputs, frame_mask


def seed_head(d_model: int, hidden: int, vocab_size: int) -> nn.Sequential:
    """The PhoWhisper-CTC head: Linear-GELU-LayerNorm-Linear (keys ctc_head.0/2/3)."""
    return nn.Sequential(
        nn.Linear(d_model, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, vocab_size)
    )


class SeedHead(nn.Module):
    """Seed head on the last encoder layer."""

    def __init__(self, d_model: int, hidden: int, vocab_size: int) -> None:
        super().__init__()
        self.mlp = seed_head(d_model, hidden, vocab_size)

    def forward(self, layers: list[torch.Tensor], frame_mask: torch.Tensor) -> torch.Tensor:
        return self.mlp(layers[-1])


class LayerMixConvHead(nn.Module):
    """A learned softmax mix of several encoder layers, residual 1-D convs, then the seed MLP.

    Middle layers of a frozen Whisper encoder carry more phonetic detail than the last one,
    and a few frames of context let the head settle tone and vowel marks. Padded frames are
    zeroed before every convolution, which is exactly the zero padding a lone window sees.
    Block k dilates by conv_dilation**k: with 3 blocks of k=5 and dilation 2 the head sees
    29 frames (580 ms), against 13 without dilation.
    """

    def __init__(
        self,
        d_model: int,
        hidden: int,
        vocab_size: int,
        mix_layers: tuple[int, ...],
        conv_kernel: int = 5,
        conv_blocks: int = 1,
        conv_dilation: int = 1,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.mix_layers = mix_layers  # 1-based layer numbers
        self.mix_logits = nn.Parameter(torch.zeros(len(mix_layers)))
        dilations = [conv_dilation**k for k in range(conv_blocks)]
        self.convs = nn.ModuleList(
            nn.Conv1d(d_model, d_model, conv_kernel, padding=d * (conv_kernel // 2), dilation=d)
            for d in dilations
        )
        self.conv_norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(conv_blocks))
        self.mlp = seed_head(d_model, hidden, vocab_size)

    def mix(self, layers: list[torch.Tensor]) -> torch.Tensor:
        normed = [F.layer_norm(layers[i - 1], (self.d_model,)) for i in self.mix_layers]
        return self.mix_normalized(normed)

    def mix_normalized(self, normed: list[torch.Tensor]) -> torch.Tensor:
        """The weighted sum of the already LayerNorm-ed `mix_layers` (training reads them
        from a cache)."""
        weights = self.mix_logits.softmax(dim=0)
        return sum(w * h for w, h in zip(weights, normed, strict=True))

    def forward_mixed(self, x: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        m = frame_mask[:, :, None]
        for conv, norm in zip(self.convs, self.conv_norms, strict=True):
            y = conv((norm(x) * m).transpose(1, 2)).transpose(1, 2)
            x = x + F.gelu(y)
        return self.mlp(x)

    def forward(self, layers: list[torch.Tensor], frame_mask: torch.Tensor) -> torch.Tensor:
        return self.forward_mixed(self.mix(layers), frame_mask)


class EncoderCTC(nn.Module):
    """Encoder + head -> CTC log-probabilities, the graph exported to ONNX."""

    def __init__(self, encoder: WhisperEncoder, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(
        self, input_features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        layers, frame_mask = self.encoder(input_features, lengths)
        logits = self.head(layers, frame_mask)
        return logits.log_softmax(dim=-1), lengths // 2


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def pad_mel_length(n_frames: int) -> int:
    """Round a mel frame count up to an even number (the stride-2 conv halves it)."""
    return 2 * math.ceil(n_frames / 2)
