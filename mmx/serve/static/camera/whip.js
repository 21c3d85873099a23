// The hero feed: the camera's video to `mmx relay` over WHIP, through serve's proxy
// (POST /v1/relay/whip/{camera}; the relay's own token stays on the server). One peer
// connection for the page's life: a flip or zoom swaps the track with replaceTrack.

export class WhipPublisher {
  constructor(token, onStatus) {
    this.token = token;
    this.onStatus = onStatus;
    this.pc = null;
    this.sender = null;
    this.location = null;
    this.camera = null;
  }

  async start(camera, track) {
    if (this.pc && this.camera === camera) return this.replace(track);
    await this.stop();
    this.camera = camera;
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    this.sender = pc.addTransceiver(track, { direction: "sendonly" }).sender;
    pc.onconnectionstatechange = () => {
      this.onStatus(pc.connectionState);
      if (pc.connectionState === "failed" && this.pc === pc) this.restart(track);
    };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      const done = () => pc.iceGatheringState === "complete" && resolve();
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 2000);  // publish with what was gathered
    });
    const resp = await fetch(`/v1/relay/whip/${encodeURIComponent(camera)}`, {
      method: "POST", body: pc.localDescription.sdp,
      headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${this.token}` },
    });
    if (!resp.ok) {
      this.onStatus(`refused (${resp.status})`);
      pc.close();
      this.pc = null;
      return;
    }
    this.location = resp.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
  }

  async restart(track) {
    const camera = this.camera;
    await this.stop();
    setTimeout(() => this.start(camera, track).catch(() => {}), 1000);
  }

  async replace(track) {
    if (this.sender) await this.sender.replaceTrack(track);
  }

  async stop() {
    const pc = this.pc, location = this.location;
    this.pc = null;
    this.sender = null;
    this.location = null;
    if (pc) pc.close();
    if (location) {
      await fetch(location, { method: "DELETE", headers: { Authorization: `Bearer ${this.token}` } }).catch(() => {});
    }
  }
}
