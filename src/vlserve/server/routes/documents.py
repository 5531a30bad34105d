"""A PDF's pages as small images, for people choosing pages (the playground's thumbnails).

Reading a PDF is /analyze's (routes/simple.py) and chat's (file parts); this only shows it.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from vlserve.media.encoding import to_data_url
from vlserve.server.routes.deps import RequestsDep

router = APIRouter(tags=["Simple"])


class PagesRequest(BaseModel):
    file: str = Field(description="A PDF: data URL, raw base64 or http(s) URL.")
    max_pixels: int = Field(256 * 256, ge=1024, description="Pixels of each page image (at most the budget).")


class PageImage(BaseModel):
    page: int
    width: int
    height: int
    image: str = Field(description="A JPEG data URL.")


class PagesResponse(BaseModel):
    count: int
    pages: list[PageImage]


@router.post("/pages", response_model=PagesResponse)
async def pdf_pages(body: PagesRequest, requests: RequestsDep) -> PagesResponse:
    """Every page of a PDF (up to MEDIA_MAX_PDF_PAGES) as a small JPEG, to choose from."""
    data = await requests.media.pdf_from_data_url(body.file)
    count, pages = await requests.media.pdf_pages(data, None, max_pixels=body.max_pixels)
    return PagesResponse(count=count, pages=[
        PageImage(page=p.number, width=p.width, height=p.height, image=to_data_url("image/jpeg", p.jpeg))
        for p in pages])
