"""Inference engine. api.py, manifest.py and fitness.py are torch-free (the UI may import them); the rest holds torch.

Keep this file free of imports: importing medview.engine.api runs it, and import-linter does not
see that implicit parent import (a contract checks it separately).
"""
