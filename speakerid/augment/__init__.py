"""Data augmentation: ``spec`` (SpecAugment, MixUp), ``wave`` (noise, reverberation, speed and the
waveform chain), ``channel`` (telephone / 8 kHz / G.711 simulation), ``draws`` (seeded random draws
every augmenter shares)."""
