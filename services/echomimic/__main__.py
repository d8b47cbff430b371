"""`python -m services.echomimic`: run one echomimic replica until SIGTERM."""

from libs.grpcutil.model_service import main
from services.echomimic.server import EchoMimicSettings, create_echomimic_server

if __name__ == "__main__":
    main(EchoMimicSettings, create_echomimic_server)
