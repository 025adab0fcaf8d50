import ArgumentParser
import CairnDaemon
import Foundation
import NBDProtocol

/// The NBD TLS flags of `cairn serve`, for the commands that serve something else over NBD
/// (`cairn backup export`): the same names, defaults and checks, so one set of credentials and one
/// client command line (`nbds://…`, `--tls-creds` for qemu) work for both.
struct ExportTLSOptions: ParsableArguments {
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

    /// The TLS to serve with (nil: off), or a ValidationError that names the flag to fix. Nothing is
    /// listened on before these checks pass.
    func resolved() throws -> ArchiveExportTLS? {
        if tlsPskFile != nil, tlsCert != nil || tlsKey != nil || tlsCa != nil {
            throw ValidationError("choose certificates (--tls-cert, --tls-key, --tls-ca) or pre-shared keys (--tls-psk-file), not both")
        }
        let credentials = tlsCert != nil || tlsKey != nil || tlsPskFile != nil
        let mode: NBDTLSMode
        switch tls ?? (credentials ? "required" : "off") {
        case "off": mode = .disabled
        case "selective": mode = .selective
        case "required": mode = .required
        case let other: throw ValidationError("unknown TLS mode '\(other)' (off, selective, required)")
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
