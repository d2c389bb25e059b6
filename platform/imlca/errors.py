"""User-facing errors: one line naming the cause and the fix; the CLI turns them into exit code 2."""
import re

PASSWORD_IN_URI = re.compile(r"(://[^/@\s:]*):[^/@\s]*@")


def without_passwords(text: str) -> str:
    """`text` with the password of every URI in it replaced by ***: the last guard before a message is shown."""
    return PASSWORD_IN_URI.sub(r"\1:***@", text)


class UserError(Exception):
    """Bad input the user can fix. `str(err)` is the whole message, one line."""


class ConfigError(UserError):
    """A config key is unknown, mistyped or out of range. `key` is the dotted path, e.g. `lora.rank`."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"config key '{key}': {problem}")

    def __reduce__(self):  # pickled by Ray when raised in an actor or a trial (args hold the message only)
        return ConfigError, (self.key, self.problem)

    def under(self, section: str) -> "ConfigError":
        return ConfigError(f"{section}.{self.key}" if section else self.key, self.problem)


class ConfigFileError(ConfigError):
    """The config file itself is missing or not valid YAML."""

    def __init__(self, path: str, problem: str):
        ConfigError.__init__(self, path, problem)
        self.args = (f"{path}: {problem}",)

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):
        return ConfigFileError, (self.key, self.problem)


class DataError(UserError):
    """A dataset is missing or malformed."""


class CheckpointError(UserError):
    """A checkpoint is corrupt or belongs to another experiment."""


class TrackingError(UserError):
    """The MLflow tracking store cannot be reached."""


class ResourceError(UserError):
    """Resources were asked for that the machine or cluster does not have."""


class DivergenceError(UserError):
    """A loss, adapter or statistic became NaN or infinite: the run stops where it first appears, naming the task,
    the epoch and the likely fix. Retrying cannot help (every random draw is seeded), so sweeps do not retrain it."""

    def __init__(self, what: str, fix: str, task: int | None = None, epoch: int | None = None):
        self.what, self.fix, self.task, self.epoch = what, fix, task, epoch
        where = ", ".join(p for p in (f"task {task}" if task is not None else "",
                                      f"epoch {epoch}" if epoch is not None else "") if p)
        super().__init__(f"diverged{' at ' + where if where else ''}: {what}; {fix}")

    def __reduce__(self):  # keeps the fields across Ray's pickling of errors raised in actors
        return DivergenceError, (self.what, self.fix, self.task, self.epoch)

    def at_task(self, task: int) -> "DivergenceError":
        return DivergenceError(self.what, self.fix, task, self.epoch)
