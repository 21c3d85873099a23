// The camera itself: open a facing, read its lenses, apply a zoom, grab previews and stills.
//
// Zoom factors: 1 is the main (wide) lens. Safari on a triple-camera iPhone reports a zoom
// range starting at 0.5 (the ultra-wide); Chrome on Android starts at 1. A track whose range
// starts above 1 (a webcam's PTZ zoom in percent, e.g. 100-400) has its minimum as 1x, so
// the factor is value / scale with scale = max(1, min). No zoom capability: lenses [1].

const PREVIEW_MAX_PX = 640;

export class Capture {
  constructor(video) {
    this.video = video;
    this.stream = null;
    this.track = null;
    this.facing = "back";
    this.zoom = 1;
    this.scale = 1;
    this.lenses = { back: [1], front: [1] };
    this.facings = ["back"];
    this.deviceOf = {};  // facing -> deviceId, for cameras that do not report a facing mode
    this.canvas = document.createElement("canvas");
    this.onTrack = () => {};
  }

  async open(facing, zoom = 1) {
    const video = { width: { ideal: 1920 }, height: { ideal: 1080 }, zoom: true };
    if (this.deviceOf[facing]) video.deviceId = { exact: this.deviceOf[facing] };
    else video.facingMode = { ideal: facing === "front" ? "user" : "environment" };
    const constraints = { audio: false, video };
    const stream = await navigator.mediaDevices.getUserMedia(constraints);
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.stream = stream;
    this.track = stream.getVideoTracks()[0];
    this.video.srcObject = stream;
    this.video.classList.toggle("mirror", facing === "front");
    await this.video.play().catch(() => {});
    const settings = this.track.getSettings ? this.track.getSettings() : {};
    this.facing = settings.facingMode === "user" ? "front" : settings.facingMode === "environment" ? "back" : facing;
    this.lenses[this.facing] = this.readLenses();
    await this.detectFacings();
    this.zoom = 1;
    if (zoom !== 1 && this.allows(zoom)) await this.setZoom(zoom).catch(() => {});
    this.onTrack(this.track);
    return this.track;
  }

  readLenses() {
    const caps = this.track.getCapabilities ? this.track.getCapabilities() : {};
    const z = caps.zoom;
    if (!z || typeof z.min !== "number" || typeof z.max !== "number" || z.max <= z.min) {
      this.scale = 1;
      return [1];
    }
    this.scale = Math.max(1, z.min);
    const min = z.min / this.scale, max = z.max / this.scale;
    const lenses = [];
    if (min <= 0.5 + 1e-6) lenses.push(0.5);
    lenses.push(1);
    if (max >= 2) lenses.push(Math.round(max * 10) / 10);
    return lenses;
  }

  async detectFacings() {
    // two cameras or more: a phone with a front and a back camera. Where the track reports
    // no facing mode (a laptop with two webcams), the one opened first is "back".
    const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
    const videos = devices.filter((d) => d.kind === "videoinput");
    this.facings = videos.length >= 2 ? ["back", "front"] : [this.facing];
    const caps = this.track.getCapabilities ? this.track.getCapabilities() : {};
    const current = this.track.getSettings ? this.track.getSettings().deviceId : null;
    if (videos.length >= 2 && !(caps.facingMode && caps.facingMode.length) && current && !this.deviceOf.back) {
      const other = videos.find((d) => d.deviceId && d.deviceId !== current);
      if (other) this.deviceOf = { [this.facing]: current, [this.facing === "back" ? "front" : "back"]: other.deviceId };
    }
  }

  /** Whether zoom factor ``z`` is one of this facing's lenses or a digital zoom up to the largest. */
  allows(z) {
    const lenses = this.lenses[this.facing] || [1];
    const top = Math.max(...lenses);
    return lenses.includes(z) || (z > 1 && z <= top);
  }

  async setZoom(z) {
    if (!this.allows(z)) throw new Error(`zoom ${z} is not available on the ${this.facing} camera (lenses ${this.lenses[this.facing].join(", ")})`);
    if (z !== 1 || this.zoom !== 1) {
      const caps = this.track.getCapabilities ? this.track.getCapabilities() : {};
      if (!caps.zoom) throw new Error(`the ${this.facing} camera has no zoom`);
      await this.track.applyConstraints({ advanced: [{ zoom: z * this.scale }] });
    }
    this.zoom = z;
  }

  async flip() {
    const other = this.facing === "back" ? "front" : "back";
    const keep = this.zoom;
    await this.open(other, 1);
    if (keep !== 1 && this.allows(keep)) await this.setZoom(keep).catch(() => {});
  }

  /** A preview JPEG (≤ 640 px wide) of the current picture, or null before the first frame. */
  async preview(quality = 0.7) {
    const v = this.video;
    if (!v.videoWidth) return null;
    const w = Math.min(PREVIEW_MAX_PX, v.videoWidth);
    const h = Math.round((v.videoHeight * w) / v.videoWidth);
    return this.grab(w, h, quality);
  }

  async grab(w, h, quality) {
    const c = this.canvas;
    if (c.width !== w) c.width = w;
    if (c.height !== h) c.height = h;
    c.getContext("2d").drawImage(this.video, 0, 0, w, h);
    return new Promise((resolve) => c.toBlob(resolve, "image/jpeg", quality));
  }

  /** A full-resolution JPEG: ImageCapture.takePhoto() where the browser has it, else the track's
   *  full resolution through a canvas. */
  async still() {
    if (typeof ImageCapture === "function") {
      try {
        const photo = await new ImageCapture(this.track).takePhoto();
        if (photo && photo.type === "image/jpeg" && photo.size > 0) return photo;
      } catch (err) { /* fall back to the canvas */ }
    }
    const v = this.video;
    if (!v.videoWidth) throw new Error("no picture yet");
    return this.grab(v.videoWidth, v.videoHeight, 0.92);
  }
}
