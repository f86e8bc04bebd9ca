"""The expert zoo: env presets, training experts that survive interruptions, and their scores."""
