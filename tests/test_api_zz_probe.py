import httpx
from tests.test_api_auth import api, api_settings  # noqa: F401


def test_ready(api):
    print(httpx.get(f"{api.url}/ready", timeout=200).json())
