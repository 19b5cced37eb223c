"""Network definitions shared by the app and training (torch side; never imported by ``medview.ui``).

Importing this package registers every architecture with ``medview.models.registry``.
"""

from medview.models import covid, kidney, liver, lung_sound, skin  # noqa: F401  (each registers its architectures)
from medview.models.registry import create_model, list_models, model_entry, register_model

__all__ = ["create_model", "list_models", "model_entry", "register_model"]
