"""`python -m services.dicetalk`: run one dicetalk replica until SIGTERM."""

from libs.grpcutil.model_service import main
from services.dicetalk.server import DiceTalkSettings, create_dicetalk_server

if __name__ == "__main__":
    main(DiceTalkSettings, create_dicetalk_server)
