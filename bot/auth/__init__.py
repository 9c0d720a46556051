"""API keys: several per provider, rotated least recently used first, rested when they fail."""

from bot.auth.profile import AuthProfile, ProfileStore
from bot.auth.rotation import CooldownPolicy, RotationManager

__all__ = ["AuthProfile", "CooldownPolicy", "ProfileStore", "RotationManager"]
