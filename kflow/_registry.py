"""A name -> factory registry with one resolver, in the style of `keras.*.get`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from kflow.errors import ConfigError, UnknownNameError, did_you_mean


def _normalize(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


class Registry:
    """Maps names (and aliases) to factories, and resolves identifiers.

    `get()` accepts `None`, a name, a dict `{"name": ..., **kwargs}` or an
    object that is already resolved, like `keras.initializers.get`.

    Args:
        kind: What the registry holds, used in error messages ("initializer").
        passthrough: Predicate deciding whether an object is already resolved
            and can be returned as is. Defaults to `callable`.
    """

    def __init__(self, kind: str, passthrough: Callable[[Any], bool] | None = None):
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}
        self._docs: dict[str, str] = {}
        self._aliases: dict[str, str] = {}
        self._passthrough = passthrough or callable

    def register(
        self,
        name: str,
        factory: Callable[..., Any] | None = None,
        *,
        aliases: tuple[str, ...] = (),
        doc: str = "",
    ):
        """Registers `factory` under `name`; usable as a decorator."""

        def _add(fn: Callable[..., Any]) -> Callable[..., Any]:
            key = _normalize(name)
            self._factories[key] = fn
            self._docs[key] = doc or (fn.__doc__ or "").strip().split("\n")[0]
            for alias in aliases:
                self._aliases[_normalize(alias)] = key
            return fn

        return _add(factory) if factory is not None else _add

    def names(self) -> list[str]:
        """The canonical names, sorted."""
        return sorted(self._factories)

    def aliases(self) -> dict[str, str]:
        """Alias -> canonical name."""
        return dict(self._aliases)

    def doc(self, name: str) -> str:
        return self._docs[self.canonical(name)]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _normalize(name)
        return key in self._factories or key in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def canonical(self, name: str) -> str:
        """Returns the canonical name for `name` or an alias of it.

        Raises:
            UnknownNameError: naming the valid choices and the closest one.
        """
        if not isinstance(name, str):
            raise ConfigError(
                f"A {self.kind} name must be a string. Got {name!r} "
                f"({type(name).__name__}) instead."
            )
        key = _normalize(name)
        if key in self._factories:
            return key
        if key in self._aliases:
            return self._aliases[key]
        allowed = self.names()
        raise UnknownNameError(
            f"Unknown {self.kind} '{name}'. Allowed: {', '.join(allowed)}"
            f"{did_you_mean(name, allowed + list(self._aliases))}."
        )

    def get(self, identifier: Any, **kwargs: Any) -> Any:
        """Resolves `identifier` to an object.

        Args:
            identifier: `None`, a registered name or alias, a dict
                `{"name": NAME, **kwargs}`, or an already built object.
            **kwargs: Extra keyword arguments passed to the factory.
        """
        if identifier is None:
            return None
        if isinstance(identifier, dict):
            config = dict(identifier)
            if "name" not in config:
                raise ConfigError(
                    f"A {self.kind} given as a dict needs a 'name' key. "
                    f"Got {identifier!r} instead."
                )
            name = config.pop("name")
            return self.get(name, **{**config, **kwargs})
        if isinstance(identifier, str):
            factory = self._factories[self.canonical(identifier)]
            try:
                return factory(**kwargs)
            except TypeError as exc:
                raise ConfigError(
                    f"Invalid arguments for {self.kind} '{identifier}': {exc}. "
                    f"Got {kwargs!r}."
                ) from exc
        if self._passthrough(identifier):
            return identifier
        raise ConfigError(
            f"Could not interpret {self.kind} {identifier!r}: expected a name "
            f"({', '.join(self.names())}), a dict with a 'name' key, or an object."
        )
