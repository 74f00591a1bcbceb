"""The character book in the database: one user's characters are bounded, oldest forgotten first;
their images are files in MEDIA_DIR that live exactly as long as a row points to them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from sqlalchemy import Connection, text

from connectors.database import get_engine
from services.characters import MAX_CHARACTERS_PER_USER, CharacterImage, CharacterProfile, DatabaseCharacterBook
from services.store.migrate import alembic_config
from services.store.models import Base


def profile(name: str) -> CharacterProfile:
    return CharacterProfile(
        name=name, summary="s", appearance="a", personality="p", art_style="3D", visual_description=f"{name} in blue"
    )


def picture(label: str) -> CharacterImage:
    """Distinct bytes per label: the book keeps what it is given (the handler checked it)."""
    return CharacterImage(data=f"image of {label}".encode(), mime_type="image/webp")


def image_files(media: Path) -> set[str]:
    folder = media / "characters"
    return {path.name for path in folder.iterdir()} if folder.is_dir() else set()


async def test_the_book_keeps_a_users_newest_characters(database: str, tmp_path: Path) -> None:
    book = DatabaseCharacterBook(tmp_path / "media")
    await book.remember("test:other", profile("Neighbour"))
    names = [f"Hero{i}" for i in range(MAX_CHARACTERS_PER_USER + 1)]
    for name in names:
        await book.remember("test:1", profile(name))
    assert await book.names("test:1") == names[1:]
    assert await book.find("test:1", "hero0") is None

    await book.remember("test:1", profile("Hero1"))  # replacing a character makes it the newest
    await book.remember("test:1", profile("Newcomer"))
    kept = await book.names("test:1")
    assert len(kept) == MAX_CHARACTERS_PER_USER and "Hero2" not in kept
    assert kept[-2:] == ["Hero1", "Newcomer"]
    last = await book.find("test:1", "last")
    assert last is not None and last.name == "Newcomer"
    assert await book.names("test:other") == ["Neighbour"]


async def test_a_characters_image_is_kept_once_and_read_back(database: str, tmp_path: Path) -> None:
    media = tmp_path / "media"
    book = DatabaseCharacterBook(media)
    await book.remember("test:1", profile("Captain"), picture("captain"))
    await book.remember("test:1", profile("Twin"), picture("captain"))  # the same upload, another name
    await book.remember("test:1", profile("Plain"))
    assert len(image_files(media)) == 1
    for name in ("captain", "TWIN"):
        assert await book.image_of("test:1", name) == picture("captain")
    assert await book.image_of("test:1", "plain") is None
    assert await book.image_of("test:1", "nobody") is None
    assert await book.image_of("test:2", "captain") is None
    await book.remember("test:1", profile("Newest"), picture("newest"))
    assert await book.image_of("test:1", "last") == picture("newest")


async def test_the_21st_character_removes_the_oldest_ones_image(database: str, tmp_path: Path) -> None:
    media = tmp_path / "media"
    book = DatabaseCharacterBook(media)
    await book.remember("test:other", profile("Copycat"), picture("shared"))
    await book.remember("test:1", profile("Shared"), picture("shared"))
    await book.remember("test:1", profile("Oldest"), picture("oldest"))
    for i in range(MAX_CHARACTERS_PER_USER - 2):
        await book.remember("test:1", profile(f"Hero{i}"), picture(f"hero{i}"))
    assert len(image_files(media)) == MAX_CHARACTERS_PER_USER
    oldest_file = image_files(media)

    await book.remember("test:1", profile("Newcomer"), picture("newcomer"))  # drops Shared
    assert "Shared" not in await book.names("test:1")
    assert await book.image_of("test:other", "copycat") == picture("shared")  # still another row's image
    await book.remember("test:1", profile("Latecomer"), picture("latecomer"))  # drops Oldest
    assert "Oldest" not in await book.names("test:1")
    files = image_files(media)
    assert len(files) == MAX_CHARACTERS_PER_USER + 1  # test:1's twenty and test:other's one
    assert len(oldest_file - files) == 1  # the oldest's file went, and only it


async def test_re_analysing_a_name_replaces_its_image(database: str, tmp_path: Path) -> None:
    media = tmp_path / "media"
    book = DatabaseCharacterBook(media)
    await book.remember("test:1", profile("Captain"), picture("first"))
    [first] = image_files(media)
    await book.remember("test:1", profile("captain"), picture("first"))  # the same image again: kept
    assert image_files(media) == {first}
    await book.remember("test:1", profile("Captain"), picture("second"))
    assert await book.image_of("test:1", "captain") == picture("second")
    assert first not in image_files(media) and len(image_files(media)) == 1
    await book.remember("test:1", profile("Captain"))  # re-analysed without an image: none is left
    assert await book.image_of("test:1", "captain") is None
    assert image_files(media) == set()


async def test_a_missing_image_file_leaves_the_profile_usable(database: str, tmp_path: Path) -> None:
    media = tmp_path / "media"
    book = DatabaseCharacterBook(media)
    await book.remember("test:1", profile("Captain"), picture("captain"))
    for path in (media / "characters").iterdir():
        path.unlink()
    assert await book.image_of("test:1", "captain") is None
    assert await book.find("test:1", "captain") == profile("Captain")


def _to(revision: str) -> Callable[[Connection], None]:
    """Alembic to ``revision`` on a connection (run inside ``run_sync``)."""

    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    return run


async def test_a_database_with_characters_is_migrated_to_keep_images(database: str, tmp_path: Path) -> None:
    async with get_engine().begin() as connection:
        await connection.run_sync(Base.metadata.drop_all)
        await connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        await connection.run_sync(_to("0004_job_parent"))
        await connection.execute(
            text(
                "INSERT INTO characters (user_key, name, name_key, profile, created_at) "
                "VALUES (:u, :n, :k, :p, CURRENT_TIMESTAMP)"
            ),
            [
                {"u": "test:1", "n": name, "k": name.lower(), "p": profile(name).model_dump_json()}
                for name in ("Captain", "Mate")
            ],
        )
        await connection.run_sync(_to("head"))
    media = tmp_path / "media"
    book = DatabaseCharacterBook(media)
    assert await book.names("test:1") == ["Captain", "Mate"]
    assert await book.find("test:1", "captain") == profile("Captain")
    assert await book.image_of("test:1", "captain") is None
    await book.remember("test:1", profile("Mate"), picture("mate"))
    assert await book.image_of("test:1", "mate") == picture("mate")
    assert await book.names("test:1") == ["Captain", "Mate"]
