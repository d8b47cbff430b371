"""Which face of a portrait to animate: the fields talkserve's own API adds to the portrait kinds.

The documented APIs keep their fields; `/v1/jobs` (kinds `portrait` and `emotion`) also takes
`face_index` (faces counted from 0, left to right) or `face_box` (x0,y0,x1,y1 in the portrait's
pixels, holding the face's centre). Neither: the largest frontal face (libs/talkface/choice.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema, model_validator

from services.gateway.validation import Int
from talkserve.common.v1 import common_pb2


def _box(value: Any) -> Any:
    # a form field is text: "x0,y0,x1,y1"; JSON may send the list itself
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if len(parts) != 4 or not all(p.lstrip("-").isdigit() for p in parts):
            raise ValueError("must be four whole numbers x0,y0,x1,y1")
        return [int(p) for p in parts]
    return value


BoxT = Annotated[tuple[Int, Int, Int, Int], BeforeValidator(_box),
                 WithJsonSchema({"type": "string", "pattern": r"^\d+,\d+,\d+,\d+$",
                                 "description": "x0,y0,x1,y1 in the portrait's pixels"})]


class FaceFields(BaseModel):
    """`face_index` or `face_box`: the face to animate in a portrait with several."""

    face_index: Optional[Int] = Field(None, ge=0, le=255, description="the face to animate, counted from 0 left to "
                                      "right (by the nose tip); default: the largest frontal face")
    face_box: Optional[BoxT] = Field(None, description="animate the face whose centre lies in this box: x0,y0,x1,y1 "
                                     "in the portrait's pixels; default: the largest frontal face")

    @model_validator(mode="after")
    def _one_face(self) -> FaceFields:
        if self.face_index is not None and self.face_box is not None:
            raise ValueError("give face_index or face_box, not both")
        if self.face_box is not None:
            x0, y0, x1, y1 = self.face_box
            if min(self.face_box) < 0 or max(self.face_box) > 65535 or x1 <= x0 or y1 <= y0:
                raise ValueError("face_box must be x0,y0,x1,y1 with 0 <= x0 < x1 <= 65535 and 0 <= y0 < y1 <= 65535")
        return self

    def face_choice(self) -> common_pb2.FaceChoice:
        """The proto form (unset when the request names no face)."""
        if self.face_index is not None:
            return common_pb2.FaceChoice(index=self.face_index)
        if self.face_box is not None:
            x0, y0, x1, y1 = self.face_box
            return common_pb2.FaceChoice(box=common_pb2.FaceBox(x0=x0, y0=y0, x1=x1, y1=y1))
        return common_pb2.FaceChoice()


def named_face(params: BaseModel) -> tuple[Optional[int], Optional[tuple]]:
    """(face_index, face_box) of any kind's parameters (neither for kinds without them)."""
    if isinstance(params, FaceFields):
        return params.face_index, params.face_box
    return None, None
