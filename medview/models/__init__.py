"""Network definitions shared by the app and training (torch side; never imported by ``medview.ui``)."""
