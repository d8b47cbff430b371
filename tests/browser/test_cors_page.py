"""A web page on another origin calls the EchoMimic API with fetch, as echomimic-fastapi.md's
JavaScript example does, in a real browser (Playwright, Debian's Chromium headless).

The page is served by a second local server on a port of its own, so every call to the gateway
is cross-origin: the browser sends a preflight-free multipart POST, polls the status and finally
fetches the video, and each answer must carry the CORS headers or the script sees nothing.
"""

from __future__ import annotations

import functools
import http.server
import pathlib
import threading

import pytest
from PIL import Image
from skimage import data

from libs.speech.espeak import synthesize, write_wav

# The document's JavaScript example, verbatim but for its host (`http://127.0.0.1:7688`, here
# API_URL) and the page elements it expects; it logs what it sees for the test to read.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>EchoMimic client</title></head>
<body>
<input type="file" id="imageInput"> <input type="file" id="audioInput">
<button id="submitBtn">生成</button>
<script>
window.__log = [];
window.addEventListener('unhandledrejection', e => window.__log.push(['error', String(e.reason)]));
for (const level of ["log", "error"]) {
  const original = console[level];
  console[level] = (...args) => { window.__log.push([level, ...args]); original(...args); };
}
// 使用fetch API的示例
async function generateVideo(imageFile, audioFile, params = {}) {
  const formData = new FormData();
  formData.append('reference_image', imageFile);
  formData.append('audio_file', audioFile);

  // 添加其他参数
  Object.keys(params).forEach(key => {
    formData.append(key, params[key]);
  });

  const response = await fetch('API_URL/generate_video', {
    method: 'POST',
    body: formData
  });

  return await response.json();
}

async function getTaskStatus(taskId) {
  const response = await fetch(`API_URL/task/${taskId}`);
  return await response.json();
}

// 使用示例
document.getElementById('submitBtn').addEventListener('click', async () => {
  const imageFile = document.getElementById('imageInput').files[0];
  const audioFile = document.getElementById('audioInput').files[0];

  if (!imageFile || !audioFile) {
    alert('请选择图片和音频文件');
    return;
  }

  const result = await generateVideo(imageFile, audioFile);
  console.log('任务已提交:', result);

  const taskId = result.task_id;

  // 定期检查任务状态
  const statusCheck = setInterval(async () => {
    const status = await getTaskStatus(taskId);
    console.log('任务状态:', status);

    if (status.status === 'completed') {
      clearInterval(statusCheck);
      // 显示下载链接
      const downloadLink = document.createElement('a');
      downloadLink.href = `API_URL/download/${taskId}`;
      downloadLink.textContent = '下载生成的视频';
      downloadLink.download = `echomimic_${taskId}.mp4`;
      document.body.appendChild(downloadLink);
    } else if (status.status === 'failed') {
      clearInterval(statusCheck);
      console.error('任务失败:', status.error);
    }
  }, 5000);
});
</script>
</body></html>
"""

# What the page's script then does with the link: fetch the video and play it (cross-origin too).
FETCH_AND_PLAY = """async (href) => {
  const response = await fetch(href);
  const bytes = new Uint8Array(await response.arrayBuffer());
  const video = document.createElement('video');
  video.muted = true;
  video.src = URL.createObjectURL(new Blob([bytes], {type: 'video/mp4'}));
  document.body.appendChild(video);
  await new Promise((ok, fail) => { video.onloadeddata = ok; video.onerror = () => fail('cannot play'); });
  await video.play();
  return {status: response.status, type: response.headers.get('content-type'),
          disposition: response.headers.get('content-disposition'), size: bytes.length,
          box: String.fromCharCode(...bytes.slice(4, 8)), width: video.videoWidth, duration: video.duration};
}"""


@pytest.fixture(scope="module")
def other_origin(tmp_path_factory, site):
    """The page, the portrait and the speech, served from a second local port."""
    folder = tmp_path_factory.mktemp("other-origin")
    (folder / "index.html").write_text(PAGE.replace("API_URL", site), encoding="utf-8")
    Image.fromarray(data.astronaut()).save(folder / "portrait.png")
    write_wav(synthesize("Hello from another page.", voice="en"), folder / "speech.wav")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", folder
    httpd.shutdown()
    httpd.server_close()


def test_page_on_another_origin_gets_the_video(page, site, other_origin):
    url, folder = other_origin
    assert url.rsplit(":", 1)[1] != site.rsplit(":", 1)[1]  # another port: another origin
    page.goto(f"{url}/index.html")
    page.set_input_files("#imageInput", str(folder / "portrait.png"))
    page.set_input_files("#audioInput", str(folder / "speech.wav"))
    page.click("#submitBtn")

    # Until the link shows, or a fetch fails (a blocked cross-origin answer is a TypeError).
    page.wait_for_function("() => document.querySelector('a[download]') || window.__log.some(e => e[0] === 'error')",
                           timeout=180_000)
    log = page.evaluate("window.__log")
    assert not [entry for entry in log if entry[0] == "error"], log
    link = page.query_selector("a[download]")
    submitted = next(entry[2] for entry in log if entry[1] == "任务已提交:")
    task_id = submitted["task_id"]
    assert submitted["status"] == "pending"
    statuses = [entry[2]["status"] for entry in log if entry[1] == "任务状态:"]
    assert statuses[-1] == "completed"
    assert link.get_attribute("download") == f"echomimic_{task_id}.mp4"

    got = page.evaluate(FETCH_AND_PLAY, link.get_attribute("href"))
    assert got["status"] == 200 and got["type"] == "video/mp4" and got["box"] == "ftyp", got
    assert got["disposition"] == f'attachment; filename="echomimic_{task_id}.mp4"'  # exposed to the script
    assert got["width"] == 512 and got["duration"] > 1.0 and got["size"] > 10_000
