"""GUI tests: real widgets driven with real Qt events on the offscreen platform."""
