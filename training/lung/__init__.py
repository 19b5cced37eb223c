"""Paper 004: lung-sound CNN snapshot ensemble over ICBHI respiratory cycles (normal / crackle / wheeze / both)."""
