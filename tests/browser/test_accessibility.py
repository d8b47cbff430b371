"""The web page for people who use a screen reader, a keyboard or a dark theme.

axe-core (the npm package's build, shipped by the axe-playwright-python wheel) finds no serious or
critical violation in light or dark mode, with the form filled, a result shown and the history
listed; input borders keep 3:1 against their background in both modes; dark mode follows
`prefers-color-scheme`; everything works from the keyboard.
"""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import screenshot

BLOCKING = {"serious", "critical"}
# Every control the form has, in the order Tab reaches them (the emotion kind's fields).
TAB_ORDER = ["kind-emotion", "image-file", "image-url", "audio-file", "audio-url", "emotion", "emo-scale",
             "min-resolution", "fps", "dynamic-scale", "seed", "submit"]


@pytest.fixture(scope="module")
def axe_script() -> str:
    from axe_playwright_python.base import AXE_SCRIPT

    assert AXE_SCRIPT.startswith("/*! axe v4."), "axe-core's own build"
    return AXE_SCRIPT


def violations(page, axe_script: str) -> list[dict]:
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(axe_script)
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["html"][:120] for n in v["nodes"]][:4]}
            for v in result["violations"] if v["impact"] in BLOCKING]


def rgb(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in re.findall(r"[\d.]+", text)[:3])


def contrast(a: str, b: str) -> float:
    def luminance(colour: tuple[float, ...]) -> float:
        lin = [c / 255 / 12.92 if c / 255 <= 0.03928 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in colour]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    la, lb = sorted((luminance(rgb(a)), luminance(rgb(b))), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_axe_finds_nothing_serious_in_light_and_dark_mode(page, site, inputs, axe_script):
    portrait, speech = inputs
    page.goto(site)
    page.wait_for_load_state("networkidle")
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        assert violations(page, axe_script) == [], f"empty form, {scheme}"

    # Filled in, a short job made: previews, the result, the history and its notices all on show.
    page.emulate_media(color_scheme="light")
    page.set_input_files("#image-file", str(portrait))
    page.set_input_files("#audio-file", str(speech.with_name("short.wav")))
    page.select_option("#min-resolution", "256")
    page.click("#submit")
    page.wait_for_selector("#result-section:not([hidden])", timeout=120_000)
    page.wait_for_selector("#history:not([hidden])")
    page.wait_for_function("() => document.getElementById('result-video').readyState >= 2", timeout=30_000)
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        assert violations(page, axe_script) == [], f"with a result, {scheme}"
        screenshot(page, f"web-page-{scheme}.png")
    # The check sees what it is for: an input without a name is caught.
    page.evaluate("document.querySelector('main').append(Object.assign(document.createElement('input'), {id: 'x'}))")
    assert any(v["id"] == "label" for v in violations(page, axe_script))


def test_names_of_the_controls(page, site):
    """Sliders, inputs and the progress bar have names a screen reader reads out."""
    page.goto(site)
    names = {
        "#emo-scale": "Emotion strength", "#dynamic-scale": "Head motion", "#image-url": "…or paste an image URL",
        "#audio-url": "…or paste an audio URL", "#seed": "Seed (same seed, same result)", "#emotion": "Emotion",
        "#min-resolution": "Size (shorter side)", "#fps": "Frames per second",
    }
    for selector, name in names.items():
        assert page.locator(selector).evaluate("el => el.labels.length") == 1, selector
        assert page.get_by_label(name, exact=True).evaluate("el => '#' + el.id") == selector
    assert page.get_by_role("slider", name="Emotion strength").count() == 1
    assert page.get_by_role("progressbar", name="Working on it", include_hidden=True).count() == 1
    assert page.get_by_role("radio", name=re.compile("^Portrait with emotion")).is_checked()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_colours_follow_the_system_and_input_borders_keep_3_to_1(page, site, scheme):
    page.emulate_media(color_scheme=scheme)
    page.goto(site)
    look = page.evaluate("""() => {
        const s = (sel) => getComputedStyle(document.querySelector(sel));
        return {page: s('body').backgroundColor, text: s('body').color, card: s('.card').backgroundColor,
                borders: ['#image-url', '#seed', '#emotion', '.drop', '.kind'].map((sel) => [sel, s(sel).borderTopColor,
                          s(sel).backgroundColor])};
    }""")
    dark_page = sum(rgb(look["page"])) / 3 < 60
    assert dark_page == (scheme == "dark"), look
    assert contrast(look["text"], look["card"]) >= 7, look
    for selector, border, background in look["borders"]:
        behind = background if rgb(background) and "0, 0, 0, 0" not in background else look["card"]
        assert contrast(border, behind) >= 3, (selector, border, behind)
        assert contrast(border, look["card"]) >= 3, (selector, border, look["card"])


def test_the_page_works_from_the_keyboard(page, site):
    page.goto(site)
    page.wait_for_load_state("networkidle")
    reached = []
    page.locator("body").focus()
    for _ in range(16):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    assert [r for r in reached if r in TAB_ORDER] == TAB_ORDER, reached
    # Every focused control shows where the focus is.
    page.focus("#seed")
    assert page.eval_on_selector("#seed", "el => getComputedStyle(el).outlineStyle") != "none"

    # Arrow keys move the sliders and their shown value; arrows change the kind of job.
    page.focus("#emo-scale")
    page.keyboard.press("ArrowRight")
    assert page.input_value("#emo-scale") == "6.5" and page.inner_text("#emo-scale-out") == "6.5"
    page.focus("#kind-emotion")
    page.keyboard.press("ArrowRight")
    assert page.is_checked("#kind-redub") and page.is_visible("#video-drop") and page.is_hidden("#image-drop")
    page.keyboard.press("ArrowLeft")
    assert page.is_checked("#kind-emotion")

    # Enter on the button sends the form; what is missing is said.
    page.focus("#submit")
    page.keyboard.press("Enter")
    assert page.inner_text("#error") == "Choose a portrait image (or paste its URL)."
