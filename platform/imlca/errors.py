"""User-facing errors: one line naming the cause and the fix; the CLI turns them into exit code 2."""


class UserError(Exception):
    """Bad input the user can fix. `str(err)` is the whole message, one line."""


class ConfigError(UserError):
    """A config key is unknown, mistyped or out of range. `key` is the dotted path, e.g. `lora.rank`."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"config key '{key}': {problem}")

    def under(self, section: str) -> "ConfigError":
        return ConfigError(f"{section}.{self.key}" if section else self.key, self.problem)


class ConfigFileError(ConfigError):
    """The config file itself is missing or not valid YAML."""

    def __init__(self, path: str, problem: str):
        ConfigError.__init__(self, path, problem)
        self.args = (f"{path}: {problem}",)

    def __str__(self) -> str:
        return self.args[0]


class DataError(UserError):
    """A dataset is missing or malformed."""


class CheckpointError(UserError):
    """A checkpoint is corrupt or belongs to another experiment."""


class TrackingError(UserError):
    """The MLflow tracking store cannot be reached."""


class ResourceError(UserError):
    """Resources were asked for that the machine or cluster does not have."""
