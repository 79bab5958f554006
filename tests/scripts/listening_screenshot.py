"""The README's screenshot of the listening page: a rater on the first item of a study, clip played, answered.

    python tests/scripts/listening_screenshot.py outputs/study docs/listening_page.png

Headless Chromium (system package) through Selenium, as the browser test; the PNG is reduced to a 64-colour palette
to stay small in the repository.
"""

import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from browser import start_chromium, stop_chromium  # noqa: E402


def main(study: str, output: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    with tempfile.TemporaryDirectory() as downloads:
        driver = start_chromium(Path(downloads), width=860, height=860)
        try:
            driver.get((Path(study) / "page" / "index.html").resolve().as_uri())
            driver.find_element("id", "rater-input").send_keys("rater-07", Keys.ENTER)
            for key in (" ", "y", "4"):
                ActionChains(driver).send_keys(key).perform()
            time.sleep(0.4)  # a moment of playback, so that the player shows progress
            ActionChains(driver).send_keys(" ").perform()
            driver.save_screenshot(output)
        finally:
            stop_chromium(driver)
    image = Image.open(output).convert("RGB")
    image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(output, optimize=True)
    print(f"Wrote {output} ({Path(output).stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
