"""A pipeline document (JSON object or YAML text) -> checked steps. Pure: no Flask, no db.

    name: nightly
    defaults: {provider: local, config: {...}, dataloader_config: [...]}
    steps:
      - name: base
      - name: finetune
        depends_on: [base]          # step names, or ids of existing jobs
        on: completed               # completed (default) | any
        inputs: {init_lora_weights: {from: base}}   # or resume_from_checkpoint: {from: base}
        config: {max_train_steps: 40}

A step is a submit body (merged over ``defaults``; ``config`` is merged key by key).
Unknown step references and cycles are 422 (``ValidationError``).
"""
from __future__ import annotations

import graphlib
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from stcloud.errors import BadRequest, ValidationError

DEP_KEYS = ("depends_on", "on", "inputs")
ON_CHOICES = ("completed", "any")
INPUT_NAMES = ("init_lora_weights", "resume_from_checkpoint")
MAX_STEPS = 100


@dataclass
class Step:
    name: str
    body: dict  # the submit body, without depends_on / on / inputs
    depends_on: list[str] = field(default_factory=list)  # step names or job ids
    on: str = "completed"
    inputs: dict = field(default_factory=dict)  # {input name: step name or job id}


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 (PyYAML's default) reads the key ``on:``
    (and yes/no/off values) as booleans, which would lose ``on: any``."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def load_yaml(text: str | bytes) -> Any:
    """Parse YAML (or JSON) text. Raises yaml.YAMLError."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def load(raw: Any) -> dict:
    """A JSON object, or YAML/JSON text. Raises BadRequest."""
    if isinstance(raw, (str, bytes)):
        try:
            raw = load_yaml(raw)
        except yaml.YAMLError as exc:
            raise BadRequest(f"the pipeline document is not valid YAML/JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BadRequest("the pipeline document must be an object with steps")
    return raw


def dependency_fields(body: dict) -> tuple[list[str], str, dict]:
    """``depends_on``, ``on`` and ``inputs`` of one body, shape-checked. Raises ValidationError."""
    deps = body.get("depends_on") or []
    if isinstance(deps, str):
        deps = [deps]
    if not isinstance(deps, list) or not all(isinstance(d, str) and d.strip() for d in deps):
        raise ValidationError("depends_on must be a list of job ids (or step names in a pipeline)",
                              extra={"field": "depends_on"})
    deps = list(dict.fromkeys(d.strip() for d in deps))
    on = body.get("on") or "completed"
    if on not in ON_CHOICES:
        raise ValidationError(f"on must be one of {', '.join(ON_CHOICES)}", extra={"field": "on"})
    raw_inputs = body.get("inputs") or {}
    if not isinstance(raw_inputs, dict):
        raise ValidationError("inputs must be an object: {init_lora_weights | resume_from_checkpoint: "
                              "{from: <job or step>}}",
                              extra={"field": "inputs"})
    inputs = {}
    for name, ref in raw_inputs.items():
        if name not in INPUT_NAMES:
            raise ValidationError(f"inputs: unknown input {name!r}; expected one of {', '.join(INPUT_NAMES)}",
                                  extra={"field": "inputs"})
        source = ref.get("from") if isinstance(ref, dict) else None
        if not isinstance(source, str) or not source:
            raise ValidationError(f"inputs.{name} must be {{from: <job id or step name>}}", extra={"field": "inputs"})
        if source not in deps:
            raise ValidationError(f"inputs.{name}: {source} is not in depends_on", extra={"field": "inputs"})
        inputs[name] = source
    return deps, on, inputs


def _merge(defaults: dict, step: dict) -> dict:
    out = {**defaults, **step}
    if isinstance(defaults.get("config"), dict) and isinstance(step.get("config"), dict):
        out["config"] = {**defaults["config"], **step["config"]}
    return out


def parse(doc: dict) -> tuple[str, list[Step]]:
    """(pipeline name, steps in an order where each step comes after its dependencies).
    Raises BadRequest (shape) or ValidationError (references, cycles)."""
    name = doc.get("name") or "pipeline"
    if not isinstance(name, str) or len(name) > 200:
        raise BadRequest("name must be a string of at most 200 characters", extra={"field": "name"})
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise BadRequest("defaults must be an object (a partial submit body)", extra={"field": "defaults"})
    raw_steps = doc.get("steps")
    if isinstance(raw_steps, dict):  # {name: body} form
        raw_steps = [{"name": k, **(v or {})} for k, v in raw_steps.items()]
    if not isinstance(raw_steps, list) or not raw_steps:
        raise BadRequest("steps must be a non-empty list of submit bodies with a name", extra={"field": "steps"})
    if len(raw_steps) > MAX_STEPS:
        raise BadRequest(f"a pipeline has at most {MAX_STEPS} steps", extra={"field": "steps"})
    steps: dict[str, Step] = {}
    for i, raw in enumerate(raw_steps):
        if not isinstance(raw, dict):
            raise BadRequest(f"steps[{i}] must be an object", extra={"field": "steps"})
        step_name = raw.get("name")
        if not isinstance(step_name, str) or not step_name.strip() or len(step_name) > 200:
            raise BadRequest(f"steps[{i}] needs a name (a string)", extra={"field": "steps"})
        if step_name in steps:
            raise ValidationError(f"step name {step_name!r} is used twice", extra={"field": "steps"})
        deps, on, inputs = dependency_fields(raw)
        body = _merge(defaults, {k: v for k, v in raw.items() if k not in DEP_KEYS})
        body.setdefault("name", step_name)
        steps[step_name] = Step(step_name, body, deps, on, inputs)
    graph = {n: [d for d in s.depends_on if d in steps] for n, s in steps.items()}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1]) if len(exc.args) > 1 else "?"
        raise ValidationError(f"the steps' dependencies form a cycle: {cycle}",
                              extra={"field": "steps", "cycle": list(exc.args[1]) if len(exc.args) > 1 else []}) from None
    return name, [steps[n] for n in order]
