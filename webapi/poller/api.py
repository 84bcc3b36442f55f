"""The poller's side of the native HTTP API, typed with the wire contract: claim, heartbeat,
finish, upload a result, fetch an input, look at a calc."""

from __future__ import annotations

from pathlib import Path

from webapi.contract.calc import (
    CalcView,
    ClaimGrant,
    ClaimRequest,
    FileAck,
    FileEntry,
    FinishReport,
    Heartbeat,
    HeartbeatReply,
    Unclaim,
)
from webapi.transport import Transport, TransportSettings, quote_name


class PollerApi:
    """One server, as a poller of `site` sees it; every call raises ApiError / TransportError /
    MalformedAnswer (webapi.errors) rather than hand back something unchecked."""

    def __init__(self, settings: TransportSettings, site: str) -> None:
        self.transport = Transport(settings)
        self.site = site

    def close(self) -> None:
        self.transport.close()

    def claim(self, req: ClaimRequest) -> ClaimGrant | None:
        """Long-poll for a calc of the site; None when nothing came within `req.wait`."""
        status, body = self.transport.call(
            "POST",
            f"/api/v1/sites/{self.site}/claim",
            json=req.to_json(),
            read_timeout=req.wait + 15,
            server_wait=req.wait,
        )
        if status == 204 or body is None:
            return None
        return ClaimGrant.from_json(body)

    def heartbeat(self, calc_id: str, beat: Heartbeat) -> HeartbeatReply:
        _, body = self.transport.call(
            "POST", f"/api/v1/calcs/{calc_id}/heartbeat", json=beat.to_json()
        )
        return HeartbeatReply.from_json(body)

    def finish(self, calc_id: str, report: FinishReport) -> CalcView:
        _, body = self.transport.call(
            "POST", f"/api/v1/calcs/{calc_id}/finish", json=report.to_json()
        )
        return CalcView.from_json(body)

    def upload_result(self, calc_id: str, name: str, path: Path, lease: str) -> FileAck:
        return self.transport.upload(
            f"/api/v1/calcs/{calc_id}/results/{quote_name(name)}", path, params={"lease": lease}
        )

    def fetch_input(self, calc_id: str, entry: FileEntry, dest: Path) -> Path:
        return self.transport.download(
            f"/api/v1/calcs/{calc_id}/inputs/{quote_name(entry.name)}",
            dest,
            size=entry.size,
            sha256=entry.sha256,
        )

    def unclaim(self, calc_id: str, body: Unclaim) -> CalcView:
        _, answer = self.transport.call(
            "POST", f"/api/v1/calcs/{calc_id}/unclaim", json=body.to_json()
        )
        return CalcView.from_json(answer)

    def calc(self, calc_id: str) -> CalcView:
        _, body = self.transport.call("GET", f"/api/v1/calcs/{calc_id}")
        return CalcView.from_json(body)
