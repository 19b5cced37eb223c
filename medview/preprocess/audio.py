"""The lung-sound front end of paper 004, once, for the app's pipeline and for training.

Resample to 22,050 Hz, cut each respiratory cycle into fixed 9 s segments with
*sample padding*, log-mel spectrogram (FFT window 512, no overlap, 50 mel bins,
log), z-score, split each segment into 2 chunks of 193 frames: one chunk is one
CNN input of shape (1, 50, 193).

Decisions where the paper is silent:
- Framing: non-overlapping 512-sample Hann windows over the segment without
  centre padding (the paper: "512 samples as window size ... without overlap
  between the windows"), so a 9 s segment (198,450 samples) gives 387 frames; two
  chunks of 387 // 2 = 193 frames (the paper's N) use the first 386 frames.
- Sample padding: a partially filled segment continues cyclically with the
  cycle's own samples from its start ("completed by sampling from the available
  cycle samples"); a cycle longer than 9 s becomes several segments.
- Magnitude: mel filterbank applied to the power spectrum (librosa's default)
  then natural log with a floor of 1e-10; z-score over the whole segment, so no
  dataset statistics have to travel with a bundle, and silence (constant
  features) stays all-zero instead of dividing by zero.

Why the mel filterbank is written here instead of calling librosa: librosa's
first import compiles numba code for ~30 s on a fresh install (PLATFORM.md), and
VTLP (training augmentation) warps the filterbank itself, which librosa's
``filters.mel`` cannot do.  The filterbank equals ``librosa.filters.mel``
(Slaney mel scale and area normalisation); a test compares them.  Resampling
uses ``soxr`` (the library librosa itself resamples with).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

SAMPLE_RATE = 22_050
N_FFT = 512
HOP_LENGTH = 512
N_MELS = 50
SEGMENT_SECONDS = 9.0
CHUNKS_PER_SEGMENT = 2
SEGMENT_SAMPLES = round(SEGMENT_SECONDS * SAMPLE_RATE)
SEGMENT_FRAMES = 1 + (SEGMENT_SAMPLES - N_FFT) // HOP_LENGTH
CHUNK_FRAMES = SEGMENT_FRAMES // CHUNKS_PER_SEGMENT
LOG_FLOOR = 1e-10


def resample(signal: np.ndarray, rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``signal`` (mono, any float or int dtype) resampled from ``rate`` to ``target_rate`` Hz, float32."""
    if rate <= 0:
        raise ValueError(f"sample rate: expected a positive number of Hz, got {rate}")
    samples = np.asarray(signal, dtype=np.float32)
    if rate == target_rate or samples.size == 0:
        return samples
    return soxr.resample(samples, rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def sample_padded_segments(cycle: np.ndarray, segment_samples: int = SEGMENT_SAMPLES) -> np.ndarray:
    """Fixed-length segments of one cycle, shape (n_segments, segment_samples), with sample padding.

    A cycle of length L gives ceil(L / segment_samples) non-overlapping segments;
    the last one is completed by continuing with the cycle's samples from its start.
    """
    cycle = np.asarray(cycle, dtype=np.float32)
    if cycle.ndim != 1 or cycle.size == 0:
        raise ValueError(f"cycle: expected a non-empty 1-D signal, got shape {cycle.shape}")
    count = -(-cycle.size // segment_samples)
    indices = np.arange(count * segment_samples) % cycle.size
    return cycle[indices].reshape(count, segment_samples)


def _hz_to_mel(frequencies: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (linear below 1 kHz, logarithmic above), as librosa with ``htk=False``."""
    frequencies = np.asarray(frequencies, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    mels = frequencies / f_sp
    above = frequencies >= min_log_hz
    mels[above] = min_log_hz / f_sp + np.log(frequencies[above] / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    frequencies = f_sp * mels
    above = mels >= min_log_mel
    frequencies[above] = min_log_hz * np.exp(logstep * (mels[above] - min_log_mel))
    return frequencies


def vtlp_warp(frequencies: np.ndarray, alpha: float, f_hi: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Vocal tract length perturbation of frequencies (Jaitly & Hinton 2013), the warp of paper 004.

    f -> alpha * f up to the boundary F_hi * min(alpha, 1) / alpha, then linear so
    that the Nyquist frequency maps onto itself.
    """
    nyquist = sample_rate / 2
    boundary = f_hi * min(alpha, 1.0) / alpha
    frequencies = np.asarray(frequencies, dtype=np.float64)
    upper = nyquist - (nyquist - f_hi * min(alpha, 1.0)) / (nyquist - boundary) * (nyquist - frequencies)
    return np.where(frequencies <= boundary, alpha * frequencies, upper)


def mel_filterbank(
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    *,
    vtlp_alpha: float = 1.0,
    vtlp_f_hi: float = 3500.0,
) -> np.ndarray:
    """Triangular Slaney-normalised mel filters, shape (n_mels, n_fft // 2 + 1), from 0 Hz to Nyquist.

    With ``vtlp_alpha != 1`` the FFT bin frequencies are warped before the
    triangles are evaluated: VTLP applied to the filterbank, as paper 004 does.
    """
    fft_frequencies = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    if vtlp_alpha != 1.0:
        fft_frequencies = vtlp_warp(fft_frequencies, vtlp_alpha, vtlp_f_hi, sample_rate)
    mel_points = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([sample_rate / 2]))[0], n_mels + 2)
    )
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_frequencies[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]
    return weights.astype(np.float32)


_DEFAULT_FILTERBANK = mel_filterbank()


def power_spectrogram(signal: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT|^2 with periodic Hann windows, no centring (frames start at sample 0), shape (n_fft // 2 + 1, frames)."""
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    framed = np.lib.stride_tricks.sliding_window_view(signal, n_fft)[::hop]
    return (np.abs(np.fft.rfft(framed * window, axis=1)) ** 2).T.astype(np.float32)


def log_mel(segment: np.ndarray, filterbank: np.ndarray | None = None) -> np.ndarray:
    """Z-scored log-mel spectrogram of one segment at 22,050 Hz, shape (n_mels, frames), float32."""
    segment = np.asarray(segment, dtype=np.float32)
    if segment.ndim != 1 or segment.size < N_FFT:
        raise ValueError(f"segment: expected a 1-D signal of at least {N_FFT} samples, got shape {segment.shape}")
    power = power_spectrogram(segment, N_FFT, HOP_LENGTH)
    mel = (filterbank if filterbank is not None else _DEFAULT_FILTERBANK) @ power
    features = np.log(np.maximum(mel, LOG_FLOOR))
    std = features.std()
    return ((features - features.mean()) / std if std > 0 else features - features.mean()).astype(np.float32)


def split_chunks(features: np.ndarray, chunks: int = CHUNKS_PER_SEGMENT) -> np.ndarray:
    """(n_mels, frames) -> (chunks, n_mels, frames // chunks); trailing frames that do not fill a chunk are dropped."""
    width = features.shape[1] // chunks
    if width == 0:
        raise ValueError(f"features: expected at least {chunks} frames, got {features.shape[1]}")
    return np.stack([features[:, i * width : (i + 1) * width] for i in range(chunks)])


def cycle_chunks(cycle: np.ndarray, filterbank: np.ndarray | None = None) -> np.ndarray:
    """Every CNN input of one respiratory cycle already at 22,050 Hz: shape (n, 1, 50, 193).

    Segments (sample padded) -> log-mel -> z-score -> 2 chunks each; the pipeline
    averages the class probabilities of these n chunks to label the cycle.
    """
    chunks = [split_chunks(log_mel(segment, filterbank)) for segment in sample_padded_segments(cycle)]
    return np.concatenate(chunks)[:, None]


@dataclass(frozen=True, eq=False)
class Spectrogram:
    """A display spectrogram: power in dB below the loudest bin, with its time and frequency axes."""

    db: np.ndarray  # float32 (bins, frames), 0 dB = loudest
    times_s: np.ndarray  # centre of each frame
    frequencies_hz: np.ndarray  # centre of each bin (mel band centres for a mel spectrogram)
    mel: bool


def display_spectrogram(samples: np.ndarray, rate: int, *, mel: bool, max_frames: int = 4000) -> Spectrogram:
    """Spectrogram of a whole recording for the viewer (not the model's input, which is ``log_mel``).

    About 46 ms Hann windows at the recording's own rate (fine enough in frequency
    for wheezes at 4 kHz too), hops of a quarter window, widened so a long
    recording gives at most ``max_frames`` frames and stays small in memory;
    ``mel`` applies a Slaney filterbank (128 bands, fewer for short windows) up to Nyquist.
    """
    samples = np.asarray(samples, dtype=np.float32)
    n_fft = int(2 ** round(np.log2(rate * 0.046)))
    if samples.size < n_fft:
        samples = np.pad(samples, (0, n_fft - samples.size))
    hop = max(n_fft // 4, int(np.ceil((samples.size - n_fft) / max_frames)) or 1)
    power = power_spectrogram(samples, n_fft, hop)
    frequencies = np.linspace(0, rate / 2, n_fft // 2 + 1)
    if mel:
        n_mels = min(128, n_fft // 4)  # no empty bands at low rates
        power = mel_filterbank(rate, n_fft, n_mels) @ power
        edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(np.array([rate / 2]))[0], n_mels + 2))
        frequencies = edges[1:-1]
    db = 10 * np.log10(np.maximum(power, LOG_FLOOR))
    db -= db.max()
    times = (np.arange(db.shape[1]) * hop + n_fft / 2) / rate
    return Spectrogram(db.astype(np.float32), times, frequencies.astype(np.float32), mel)
