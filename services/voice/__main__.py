"""`python -m services.voice`: run one voice replica until SIGTERM."""

from libs.grpcutil.model_service import main
from services.voice.server import VoiceSettings, create_voice_server

if __name__ == "__main__":
    main(VoiceSettings, create_voice_server)
