"""Named constants of the eCryptfs on-disk format (fs/ecryptfs/ecryptfs_kernel.h, ecryptfs-utils)."""

from __future__ import annotations

# ecryptfs-utils src/include/ecryptfs.h
DEFAULT_SALT = bytes.fromhex("0011223344556677")  # ECRYPTFS_DEFAULT_SALT_HEX, hex-decoded
# ECRYPTFS_DEFAULT_SALT_FNEK_HEX is "9988776655443322", but ecryptfs_add_passphrase.c and
# ecryptfs_insert_wrapped_passphrase_into_keyring hash its first 8 ASCII characters undecoded.
FNEK_SALT = b"99887766"
SALT_SIZE = 8
HASH_ITERATIONS = 65536  # ECRYPTFS_DEFAULT_NUM_HASH_ITERATIONS (SHA-512 calls in total)
MAX_PASSPHRASE_BYTES = 64  # ECRYPTFS_MAX_PASSPHRASE_BYTES
SIG_SIZE = 8  # ECRYPTFS_SIG_SIZE (binary bytes; 16 hex characters)
FEKEK_SIZE = 64  # session_key_encryption_key_bytes

# fs/ecryptfs/ecryptfs_kernel.h
MAGIC_MARKER = 0x3C81B7F5  # MAGIC_ECRYPTFS_MARKER
FILE_VERSION = 0x03  # ECRYPTFS_FILE_VERSION
FLAG_HMAC = 0x01  # ECRYPTFS_ENABLE_HMAC in ecryptfs_flag_map (never implemented)
FLAG_ENCRYPTED = 0x02  # ECRYPTFS_ENCRYPTED
FLAG_METADATA_IN_XATTR = 0x04  # ECRYPTFS_METADATA_IN_XATTR
FLAG_ENCRYPT_FILENAMES = 0x08  # ECRYPTFS_ENCRYPT_FILENAMES
EXTENT_SIZE = 4096  # ECRYPTFS_DEFAULT_EXTENT_SIZE
MINIMUM_HEADER_EXTENT_SIZE = 8192  # ECRYPTFS_MINIMUM_HEADER_EXTENT_SIZE
HEADER_SIZE = MINIMUM_HEADER_EXTENT_SIZE  # metadata_size on 4 KiB-page kernels
HEADER_READ_SIZE = 4096  # ecryptfs_read_metadata reads one page; packets must end before it
SIZE_FIELD_BYTES = 8  # ECRYPTFS_SIZE_AND_MARKER_BYTES - marker
MARKER_BYTES = 8  # MAGIC_ECRYPTFS_MARKER_SIZE_BYTES
PACKET_SET_OFFSET = 26  # 8 size + 8 marker + 4 version/flags + 4 extent size + 2 extent count
XATTR_NAME = "user.ecryptfs"  # ECRYPTFS_XATTR_NAME

# fs/ecryptfs/keystore.c packet tags
TAG_1_PACKET = 0x01  # ECRYPTFS_TAG_1_PACKET_TYPE (public key; not supported)
TAG_3_PACKET = 0x8C  # ECRYPTFS_TAG_3_PACKET_TYPE
TAG_11_PACKET = 0xED  # ECRYPTFS_TAG_11_PACKET_TYPE
TAG_70_PACKET = 0x46  # ECRYPTFS_TAG_70_PACKET_TYPE
TAG_3_VERSION = 0x04
S2K_ITERATED_SALTED = 0x03
HASH_MD5_LABEL = 0x01  # fixed label; the key really comes from the keyring
S2K_COUNT_65536 = 0x60  # RFC 2440 count coding: (16 + 0) << (6 + 6)
TAG_11_FORMAT_BINARY = 0x62  # 'b'
TAG_11_FILENAME = b"_CONSOLE"
TAG_11_DATE = b"\x00\x00\x00\x00"

# fs/ecryptfs/crypto.c ecryptfs_cipher_code_str_map (RFC 2440 numbers); aes is the only cipher
# ecarchive writes, the others are listed so a reader can name what it cannot decrypt.
AES_CODES = {16: 0x07, 24: 0x08, 32: 0x09}
OTHER_CIPHER_CODES = {
    0x02: "des3_ede",
    0x03: "cast5",
    0x04: "blowfish",
    0x0A: "twofish",
    0x0B: "cast6",
}
AES_BLOCK = 16

# Filenames (crypto.c, ecryptfs_kernel.h)
FNEK_PREFIX = b"ECRYPTFS_FNEK_ENCRYPTED."  # ECRYPTFS_FNEK_ENCRYPTED_FILENAME_PREFIX
FILENAME_MIN_RANDOM_PREPEND_BYTES = 16  # ECRYPTFS_FILENAME_MIN_RANDOM_PREPEND_BYTES
NAME_MAX = 255  # lower file system limit
MAX_NAME_BYTES = 143  # ENC_NAME_MAX_BLOCKLEN_8_OR_16 (ecryptfs_set_f_namelen)
MAX_SYMLINK_TARGET_BYTES = 3007  # largest target whose encrypted form fits PATH_MAX - 1
PATH_MAX = 4096
# ecryptfs_encode_for_filename's portable alphabet (index = 6-bit value)
FILENAME_ALPHABET = b"-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
