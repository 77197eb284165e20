"""The ``app_service_config_files`` config key (Synapse's name for it)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from homeserver.config import Config, ConfigError

from appservice.registration import ApplicationService, load_registrations

KEY = "app_service_config_files"


@dataclass(frozen=True)
class AppserviceConfig:
    config_files: tuple[str, ...] = ()

    @classmethod
    def parse(cls, config: Config) -> "AppserviceConfig":
        files = config.raw.get(KEY)
        if files is None:
            return cls()
        if not isinstance(files, list):
            raise ConfigError(KEY, "must be a list of registration file paths")
        for i, f in enumerate(files):
            if not isinstance(f, str) or not f:
                raise ConfigError(f"{KEY}[{i}]", "must be a file path")
        if len(set(files)) != len(files):
            raise ConfigError(KEY, "lists a file twice")
        return cls(tuple(os.path.abspath(f) for f in files))

    def load(self, server_name: str) -> list[ApplicationService]:
        """Read and validate every registration (raises ConfigError naming the file and key)."""
        return load_registrations(self.config_files, server_name)
