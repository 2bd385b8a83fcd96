"""Targets: one YAML file per device in ``targets/`` (numerics, constraints, budgets,
back end, build and runner).  ``load_target("esp32")`` or a path to a YAML file."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import QtcError


def targets_dir() -> Path:
    env = os.environ.get("QTC_TARGETS")
    if env:
        return Path(env)
    # repo layout: toolchain/qtc/target.py → ../../targets
    return Path(__file__).resolve().parents[2] / "targets"


@dataclass
class Target:
    name: str
    description: str
    numerics: str
    constraints: dict[str, Any] = field(default_factory=dict)
    budgets: dict[str, Any] = field(default_factory=dict)
    backend: list[str] = field(default_factory=list)
    build: dict[str, Any] = field(default_factory=dict)
    runner: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def power_of_two(self) -> bool:
        return bool(self.constraints.get("power_of_two", False))

    @property
    def supported_ops(self) -> list[str] | None:
        return self.constraints.get("ops")


def available_targets() -> list[str]:
    return sorted(p.stem for p in targets_dir().glob("*.yaml"))


def load_target(name_or_path: str) -> Target:
    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") and p.exists()):
        p = targets_dir() / f"{name_or_path}.yaml"
    if not p.exists():
        raise QtcError(f"unknown target {name_or_path!r}", hint=f"use one of: {', '.join(available_targets())}")
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise QtcError(f"target file is not valid YAML ({exc})", where=str(p)) from None
    known = {"name", "description", "numerics", "constraints", "budgets", "backend", "build", "runner"}
    unknown = set(doc) - known
    if unknown:
        raise QtcError(f"unknown keys {sorted(unknown)} in target file", where=str(p),
                       hint=f"allowed keys: {', '.join(sorted(known))}")
    if "name" not in doc or "numerics" not in doc:
        raise QtcError("target file needs 'name' and 'numerics'", where=str(p))
    backend = doc.get("backend") or []
    if isinstance(backend, str):
        backend = [backend]
    return Target(name=doc["name"], description=doc.get("description", ""), numerics=doc["numerics"],
                  constraints=doc.get("constraints") or {}, budgets=doc.get("budgets") or {},
                  backend=list(backend), build=doc.get("build") or {}, runner=doc.get("runner") or {}, path=p)
