"""The lung-sound workspace: a recording's waveform and spectrogram, playback, and its breathing cycles classified."""
