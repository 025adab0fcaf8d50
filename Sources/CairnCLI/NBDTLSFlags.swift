import ArgumentParser
import CairnDaemon
import Foundation
import NBDProtocol

/// The NBD TLS flags, declared once for every command that serves NBD (`cairn serve`, `cairn backup
/// export`): the same names and help, so one set of credentials and one client command line (`nbds://…`,
/// `--tls-creds` for qemu) work for both. Each command checks them with its own context (serve merges
/// its configuration file first).
struct NBDTLSFlags: ParsableArguments {
    @Option(name: .long, help: "NBD over TLS: off, selective (offered) or required (default: required with credentials, else off).")
    var tls: String?

    @Option(name: .long, help: "PEM certificate chain of the NBD server (TLS).")
    var tlsCert: String?

    @Option(name: .long, help: "PEM private key of the NBD server (TLS).")
    var tlsKey: String?

    @Option(name: .long, help: "PEM CA that client certificates must chain to (TLS; default: no client certificates).")
    var tlsCa: String?

    @Option(
        name: .customLong("tls-psk-file"),
        help: "TLS with pre-shared keys from a psktool file (username:hexkey lines) instead of certificates.")
    var tlsPskFile: String?

    /// `off`, `selective` or `required`; nil for anything else (each caller words its own error).
    static func mode(named name: String) -> NBDTLSMode? {
        switch name {
        case "off": .disabled
        case "selective": .selective
        case "required": .required
        default: nil
        }
    }

    /// The TLS `cairn backup export` serves with (nil: off), or a ValidationError that names the flag to
    /// fix. Nothing is listened on before these checks pass.
    func archiveExportTLS() throws -> ArchiveExportTLS? {
        if tlsPskFile != nil, tlsCert != nil || tlsKey != nil || tlsCa != nil {
            throw ValidationError("choose certificates (--tls-cert, --tls-key, --tls-ca) or pre-shared keys (--tls-psk-file), not both")
        }
        let credentials = tlsCert != nil || tlsKey != nil || tlsPskFile != nil
        let name = tls ?? (credentials ? "required" : "off")
        guard let mode = Self.mode(named: name) else {
            throw ValidationError("unknown TLS mode '\(name)' (off, selective, required)")
        }
        guard mode != .disabled else {
            guard !credentials && tlsCa == nil else {
                throw ValidationError("TLS credentials were given with --tls off; drop them or choose selective or required")
            }
            return nil
        }
        guard tlsPskFile != nil || (tlsCert != nil && tlsKey != nil) else {
            throw ValidationError(
                "TLS mode \(tls ?? "required") needs a certificate and a private key (--tls-cert, --tls-key) or "
                    + "pre-shared keys (--tls-psk-file)")
        }
        for path in [tlsCert, tlsKey, tlsCa, tlsPskFile].compactMap({ $0 })
        where !FileManager.default.isReadableFile(atPath: path) {
            throw ValidationError("cannot read \(path)")
        }
        return ArchiveExportTLS(
            mode: mode, certificate: tlsCert, privateKey: tlsKey, clientCA: tlsCa, preSharedKeys: tlsPskFile)
    }
}
