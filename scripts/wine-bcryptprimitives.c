/*
 * A stand-in for Windows' bcryptprimitives.dll, for running Rust test
 * binaries under Wine 8 (Debian 12), which lacks it: Rust's std (1.78+)
 * imports ProcessPrng from it for HashMap seeds. Built and installed into
 * the Wine prefix by scripts/windows-check.sh only when the prefix has no
 * bcryptprimitives.dll of its own. Test tooling only; never shipped.
 */
#include <windows.h>
#include <ntsecapi.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!RtlGenRandom(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
