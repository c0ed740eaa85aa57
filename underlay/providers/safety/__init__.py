"""Safety providers laid out by backend: ``safety/<backend>/`` holds one backend's logic and every
provider type built on it, declared by the specs in its ``__init__``."""
