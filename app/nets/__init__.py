"""Reference models and the plug-in interface for user models (see ``app.nets.interface``)."""
