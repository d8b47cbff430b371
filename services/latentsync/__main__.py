"""`python -m services.latentsync`: run one latentsync replica until SIGTERM."""

from libs.grpcutil.model_service import main
from services.latentsync.server import LatentSyncSettings, create_latentsync_server

if __name__ == "__main__":
    main(LatentSyncSettings, create_latentsync_server)
