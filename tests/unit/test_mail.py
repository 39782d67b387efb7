"""The pure parts of e-mail: composing a message, the .eml fallback, the send job's shape, the link's lifetime."""

from __future__ import annotations

import email
import uuid
from pathlib import Path

import pytest

from accounts.auth.services import _duration
from accounts.config import Settings
from accounts.mail.jobs import SEND_ATTEMPTS, send_email_job
from accounts.mail.transport import compose, deliver


def test_a_message_has_the_configured_sender_and_an_id_from_its_outbox_row() -> None:
    message_id = uuid.uuid4()
    settings = Settings(mail_from="Accounts <no-reply@example.test>")
    message = compose(settings, message_id=message_id, recipient="ada@example.com", subject="Hi", body="Hello\n")
    assert message["From"] == "Accounts <no-reply@example.test>"
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Hi"
    assert message["Message-ID"] == f"<{message_id}@accounts.invalid>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content() == "Hello\n"


async def test_without_smtp_host_a_message_is_an_eml_file_in_the_data_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    message_id = uuid.uuid4()
    message = compose(settings, message_id=message_id, recipient="ada@example.com", subject="Hi", body="Hello\n")
    await deliver(settings, message)
    written = tmp_path / "mail" / f"{message_id}.eml"
    assert [path.name for path in written.parent.iterdir()] == [written.name]
    assert email.message_from_bytes(written.read_bytes())["To"] == "ada@example.com"


def test_the_send_job_is_keyed_by_its_message_and_retried_with_back_off() -> None:
    outbox_id = uuid.uuid4()
    job = send_email_job(outbox_id)
    assert job.key == f"email:{outbox_id}"
    assert job.kwargs == {"outbox_id": str(outbox_id)}
    assert job.retries == SEND_ATTEMPTS > 1
    assert job.timeout > 0
    assert job.retry_backoff


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(3600, "1 hour"), (172_800, "48 hours"), (1800, "30 minutes"), (300, "5 minutes"), (60, "1 minute")],
)
def test_a_links_lifetime_in_words(seconds: int, words: str) -> None:
    assert _duration(seconds) == words


@pytest.mark.parametrize("value", ["none", "starttls", "tls"])
def test_smtp_tls_takes_three_modes(value: str) -> None:
    assert Settings.from_env({"SMTP_TLS": value}).smtp_tls == value
