"""Token taps and the student models (registered with timm on import)."""
