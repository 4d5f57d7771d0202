from application.values import Client
from interfaces.bootstrap import Services


def test_registered_user_appears_in_the_read_model(services: Services) -> None:
    grant = services.app.register(
        "Alice@Example.COM ", "correct horse", Client("1.2.3.4", "ua")
    )
    row = services.users.get_user(grant.user_id)
    assert row is not None
    assert row.email == "Alice@example.com"
    assert (
        services.sessions.get_session(grant.session_id, services.app.clock())
        is not None
    )
