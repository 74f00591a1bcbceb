"""Tables: generation jobs, schedules and their posted slots, character profiles, usage records.

Media bytes never go in here: results live in MEDIA_DIR and rows hold their paths.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

MICRODOLLARS = Decimal(1_000_000)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Money(TypeDecorator[Decimal]):
    """US dollars: an exact ``Decimal`` in Python, whole micro-dollars (BIGINT) in the database.

    SQLite has no exact decimal column (its NUMERIC keeps 3.2 as a float), and money summed as
    floats drifts; integers are exact in both databases, and so are their sums.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return int((Decimal(value) * MICRODOLLARS).to_integral_value())

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(int(value)) / MICRODOLLARS


class JobState(StrEnum):
    QUEUED = "queued"
    SUBMITTING = "submitting"  # the paid call is being made: never made again from this state
    RUNNING = "running"  # the provider has the work; its operation name is stored
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # final; delivered_at tells whether its error message was posted
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


UNFINISHED_STATES = (
    JobState.QUEUED,
    JobState.SUBMITTING,
    JobState.RUNNING,
    JobState.SUCCEEDED,
    JobState.FAILED,
)


class JobRecord(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    # A short's clips are jobs of their own, run and delivered only through their parent short.
    parent_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(20), default=JobState.QUEUED)
    user_key: Mapped[str] = mapped_column(String(80), index=True)
    platform: Mapped[str] = mapped_column(String(20))
    chat_id: Mapped[str] = mapped_column(String(80))
    payload: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    operation_name: Mapped[str | None] = mapped_column(String(300), nullable=True)
    # When the paid call was made: the video deadlines count from here, across restarts.
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The uploaded input image in MEDIA_DIR, removed with the result after the retention period.
    input_path: Mapped[str | None] = mapped_column(String(500), nullable=True)
    result_path: Mapped[str | None] = mapped_column(String(500), nullable=True)
    result_mime: Mapped[str | None] = mapped_column(String(60), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cost: Mapped[Decimal | None] = mapped_column("cost_micros", Money(), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_jobs_state", "state"),)


class ScheduleRecord(Base):
    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(20))
    chat_id: Mapped[str] = mapped_column(String(80), index=True)
    niche: Mapped[str] = mapped_column(String(200))
    time_of_day: Mapped[str] = mapped_column(String(5))
    timezone: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SchedulePostRecord(Base):
    """One row per (schedule, slot): the unique key is what makes a slot post exactly once."""

    __tablename__ = "schedule_posts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    schedule_id: Mapped[int] = mapped_column(Integer, index=True)
    slot: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(20), default="claimed")
    owner: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (UniqueConstraint("schedule_id", "slot", name="uq_schedule_slot"),)


class CharacterRecord(Base):
    __tablename__ = "characters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_key: Mapped[str] = mapped_column(String(80))
    name: Mapped[str] = mapped_column(String(60))
    name_key: Mapped[str] = mapped_column(String(60))
    profile: Mapped[str] = mapped_column(Text)
    #: The image the character was analysed from, relative to MEDIA_DIR (content-addressed, so rows
    #: with the same image share one file), and its type as read from its content.
    image_path: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    image_mime: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("user_key", "name_key", name="uq_character_name"),)


class UsageRecord(Base):
    __tablename__ = "usage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_key: Mapped[str] = mapped_column(String(80), index=True)
    chat_key: Mapped[str] = mapped_column(String(100), index=True)
    command: Mapped[str] = mapped_column(String(30))
    model: Mapped[str] = mapped_column(String(120))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    video_seconds: Mapped[int] = mapped_column(Integer, default=0)
    images: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[Decimal] = mapped_column("cost_micros", Money(), default=Decimal(0))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
