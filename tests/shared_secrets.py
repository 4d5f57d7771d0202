"""The key-encryption key every test process shares.

Servers, CLI runs and in-process services of one test often open one
database from different data directories; each would generate its own key,
and the second to start would rightly refuse the first one's data keys.
"""

TEST_KEY_ENCRYPTION_KEY = "tests-only-key-encryption-key-Vq7Lm2Xc9Rz4Nk8Hw"
