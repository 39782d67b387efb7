"""Enrolling, checking and removing a user's second factors: a TOTP authenticator and its recovery codes."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.config import Settings
from accounts.core.db import PRIMARY
from accounts.core.errors import Conflict, FieldError, InvalidInput, NotFound, Unauthenticated
from accounts.core.limits import AttemptLimits
from accounts.core.passwords import verify_password
from accounts.events.services import Subject, record
from accounts.mail.outbox import Outbox
from accounts.mfa.models import RecoveryCode, TotpFactor
from accounts.mfa.schemas import FactorProof, SecondFactors, TotpEnrolment
from accounts.mfa.totp import (
    TOTP_DIGITS,
    TOTP_PERIOD,
    SecretSealer,
    base32,
    matching_step,
    new_recovery_codes,
    new_totp_secret,
    provisioning_uri,
    recovery_code_hash,
)
from accounts.users.models import User

WRONG_CODE = "The code is wrong, expired or already used."


class SecondFactorService:
    """A user's TOTP authenticator and recovery codes. Every check that accepts a code spends it in one conditional
    statement, so no code is ever accepted twice, however many requests race with it."""

    def __init__(self, session: AsyncSession, sealer: SecretSealer, settings: Settings) -> None:
        self.session = session
        self.sealer = sealer
        self.settings = settings

    async def status(self, user_id: UUID) -> SecondFactors:
        confirmed_at = await self.session.scalar(
            select(TotpFactor.confirmed_at).where(TotpFactor.user_id == user_id, TotpFactor.confirmed_at.is_not(None))
        )
        return SecondFactors(
            totp=confirmed_at is not None,
            totp_confirmed_at=confirmed_at,
            recovery_codes_left=await self._codes_left(user_id),
        )

    async def has_totp(self, user_id: UUID) -> bool:
        found = await self.session.scalar(
            select(TotpFactor.user_id)
            .where(TotpFactor.user_id == user_id, TotpFactor.confirmed_at.is_not(None))
            .execution_options(bind_group=PRIMARY)
        )
        return found is not None

    async def enrol_totp(self, user: User) -> TotpEnrolment:
        """A new secret, pending until confirmed; it replaces a pending one, never a confirmed one (409)."""
        secret = new_totp_secret()
        enrolled = await self.session.execute(
            insert(TotpFactor)
            .values(user_id=user.id, sealed_secret=self.sealer.seal(secret, user.id))
            .on_conflict_do_update(
                index_elements=[TotpFactor.user_id],
                set_={"sealed_secret": self.sealer.seal(secret, user.id), "created_at": func.now()},
                where=TotpFactor.confirmed_at.is_(None),
            )
            .returning(TotpFactor.user_id)
        )
        if enrolled.first() is None:
            raise Conflict("An authenticator is set up already; turn it off first to set up another.")
        return TotpEnrolment(
            secret=base32(secret),
            otpauth_uri=provisioning_uri(secret, user.email, self.settings.totp_issuer),
            digits=TOTP_DIGITS,
            period=TOTP_PERIOD,
            algorithm="SHA1",
        )

    async def confirm_totp(self, user: User, code: str) -> tuple[list[str], UUID]:
        """Switch the pending authenticator on with a first code; returns the new recovery codes and the id of the
        security e-mail written to the outbox."""
        step = await self._step_of(user.id, code, confirmed=False)
        confirmed = await self.session.execute(
            update(TotpFactor)
            .where(TotpFactor.user_id == user.id, TotpFactor.confirmed_at.is_(None))
            .values(confirmed_at=func.now(), last_used_step=step)
            .returning(TotpFactor.user_id)
        )
        if step is None or confirmed.first() is None:
            raise InvalidInput(WRONG_CODE, errors=[FieldError(field="code", message="wrong or expired")])
        codes = await self._replace_recovery_codes(user.id)
        await record(self.session, "mfa.enabled", Subject("user", user.id), {"kind": "totp"})
        notice = await Outbox(self.session).write_notice(
            user.email,
            "Two-step verification is on",
            "An authenticator app was set up as a second step of your logins.",
        )
        return codes, notice

    async def spend_totp(self, user_id: UUID, code: str) -> bool:
        """Whether `code` is the user's current one (one step either side) and newer than any accepted before; it is
        spent in the same statement, so a code works once."""
        step = await self._step_of(user_id, code, confirmed=True)
        if step is None:
            return False
        spent = await self.session.execute(
            update(TotpFactor)
            .where(
                TotpFactor.user_id == user_id,
                TotpFactor.confirmed_at.is_not(None),
                # a step at or before the last accepted one is a replay, or an older code seen over a shoulder
                (TotpFactor.last_used_step.is_(None)) | (TotpFactor.last_used_step < step),
            )
            .values(last_used_step=step)
            .returning(TotpFactor.user_id)
        )
        return spent.first() is not None

    async def spend_recovery_code(self, user_id: UUID, code: str) -> bool:
        """Whether `code` is one of the user's unused recovery codes; it is spent in the same statement."""
        spent = await self.session.execute(
            update(RecoveryCode)
            .where(
                RecoveryCode.user_id == user_id,
                RecoveryCode.code_hash == recovery_code_hash(code),
                RecoveryCode.used_at.is_(None),
            )
            .values(used_at=func.now())
            .returning(RecoveryCode.id)
        )
        return spent.first() is not None

    async def prove(self, user: User, proof: FactorProof, limits: AttemptLimits) -> None:
        """Check the password and a second factor, counted against the account's failed-login limit: what turning the
        authenticator off or making new recovery codes needs."""
        if not await self.has_totp(user.id):
            raise NotFound("No authenticator is set up.")
        code = proof.code if isinstance(proof.code, str) else None
        recovery_code = proof.recovery_code if isinstance(proof.recovery_code, str) else None
        if (code is None) == (recovery_code is None):
            message = "send either code or recovery_code"
            raise InvalidInput(f"code: {message}", errors=[FieldError(field="code", message=message)])
        attempt = await limits.start({f"account:{user.id}": self.settings.login_max_failures_per_account})
        await self.session.commit()  # end the reads' transaction: no connection is held while argon2 runs
        # The code is spent only with the right password: a wrong password burns no code.
        proven = await verify_password(user.hashed_password, proof.password) and (
            await self.spend_totp(user.id, code)
            if code is not None
            else await self.spend_recovery_code(user.id, recovery_code or "")
        )
        if not proven:
            await attempt.failed()
            raise Unauthenticated("The password or the code is wrong.", error="invalid_grant")
        await attempt.succeeded()

    async def remove_totp(self, user: User) -> UUID:
        """Turn the authenticator off and drop the recovery codes; returns the security e-mail's outbox id."""
        await self.reset(user.id)
        await record(self.session, "mfa.disabled", Subject("user", user.id), {"kind": "totp"})
        return await Outbox(self.session).write_notice(
            user.email, "Two-step verification is off", "The authenticator app of your account was removed."
        )

    async def renew_recovery_codes(self, user: User) -> tuple[list[str], UUID]:
        codes = await self._replace_recovery_codes(user.id)
        notice = await Outbox(self.session).write_notice(
            user.email,
            "New recovery codes",
            "New recovery codes were made for your account; the old ones stopped working.",
        )
        return codes, notice

    async def reset(self, user_id: UUID) -> bool:
        """Remove every factor of the user (an admin's reset, or turning TOTP off); whether there was one."""
        removed = await self.session.execute(delete(TotpFactor).where(TotpFactor.user_id == user_id))
        await self.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
        return bool(removed.rowcount)  # type: ignore[attr-defined]

    async def _step_of(self, user_id: UUID, code: str, *, confirmed: bool) -> int | None:
        condition = TotpFactor.confirmed_at.is_not(None) if confirmed else TotpFactor.confirmed_at.is_(None)
        sealed = await self.session.scalar(
            select(TotpFactor.sealed_secret)
            .where(TotpFactor.user_id == user_id, condition)
            .execution_options(bind_group=PRIMARY)
        )
        if sealed is None:
            if not confirmed:
                raise NotFound("No authenticator is being set up: start with POST /api/v1/users/me/mfa/totp.")
            return None
        secret = self.sealer.open(sealed, user_id)
        return matching_step(secret, code) if secret is not None else None

    async def _replace_recovery_codes(self, user_id: UUID) -> list[str]:
        codes = new_recovery_codes()
        await self.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
        self.session.add_all(RecoveryCode(user_id=user_id, code_hash=recovery_code_hash(code)) for code in codes)
        await self.session.flush()
        return codes

    async def _codes_left(self, user_id: UUID) -> int:
        count = await self.session.scalar(
            select(func.count()).where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
        )
        return int(count or 0)
