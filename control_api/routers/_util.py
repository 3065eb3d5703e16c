from __future__ import annotations

from dataclasses import asdict
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)
NO_CONTENT = 204
CREATED = 201


def out(model: type[M], view: Any) -> M:
    return model.model_validate(asdict(view))


def out_list(model: type[M], views: list[Any]) -> list[M]:
    return [out(model, v) for v in views]
