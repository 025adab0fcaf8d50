import CairnArchive
import CairnCLI
import ISCSIProtocol
import Foundation
import MirrorProtocol
import NIOCore

extension FuzzTarget {
    /// The mirror link's byte stream: frames split and checked, then every payload decoded as the
    /// message its command names, as the target and the primary do.
    static let mirrorFrames = FuzzTarget(
        name: "mirror-frames", summary: "mirror frame decoder and every message payload decoder"
    ) { input in
        var buffer = ByteBuffer(bytes: input)
        while true {
            let inbound: MirrorInbound?
            do {
                inbound = try MirrorFrameDecoder.next(from: &buffer)
            } catch {
                return  // a framing error closes the link
            }
            guard case .frame(let frame)? = inbound else {
                if inbound == nil { return }
                continue
            }
            decodeMirrorPayload(frame)
        }
    }

    /// Errors are the expected answer to garbage; only a trap or a hang is a finding.
    private static func decodeMirrorPayload(_ frame: MirrorFrame) {
        let payload = frame.payload
        switch frame.command {
        case .challenge: _ = try? MirrorChallenge.decode(payload: payload)
        case .hello: _ = try? MirrorHello.decode(payload: payload)
        case .establish where frame.flags.contains(.reply): _ = try? MirrorEstablishReply.decode(payload: payload)
        case .establish: _ = try? MirrorEstablishRequest.decode(payload: payload)
        case .write: _ = try? MirrorWriteHeader.split(payload)
        case .writeZeroes, .trim: _ = try? MirrorRange.decode(payload: payload)
        case .status where frame.flags.contains(.reply): _ = try? MirrorTargetStatus.decode(payload: payload)
        default:
            _ = try? MirrorTargetProof.decode(payload: payload)
            _ = try? MirrorTargetChanges.decode(payload: payload)
            _ = try? MirrorHandleValue.decode(payload: payload)
            var remaining = payload
            _ = try? MirrorRemoteError.decode(from: &remaining)
        }
    }

    /// An iSCSI connection's bytes: PDU decoder (digests and segment sizes from the first byte), then the
    /// text, CDB and EXTENDED COPY parsers, the login state machine with CHAP, and the command window.
    static let iscsiPDUs = FuzzTarget(
        name: "iscsi-pdus", summary: "iSCSI PDU decoder, login and CHAP state machine, CDB and copy parsers"
    ) { input in
        ISCSIFuzzing.run(data: Array(input))
    }

    /// A backup archive as `backup restore` and `backup verify` read it: header, every record, the seal.
    static let archiveReader = FuzzTarget(
        name: "archive-reader", summary: "backup archive reader (header, records, data seal)"
    ) { input in
        guard let reader = try? ArchiveReader(input: MemoryArchive(bytes: Array(input))) else { return }
        _ = try? reader.verifyAll()
    }

    /// `cairn serve --config FILE`, checked as `--check-config` checks it.
    static let serveConfig = FuzzTarget(
        name: "serve-config", summary: "the YAML configuration file of cairn serve"
    ) { input in
        let path = FuzzScratch.directory + "/serve.yaml"
        guard FileManager.default.createFile(atPath: path, contents: Data(input)) else {
            fatalError("cannot write \(path)")
        }
        _ = try? ServeConfigurationCheck.check(configFile: path, dataDirectory: FuzzScratch.directory + "/data")
    }
}

/// One scratch directory per fuzzing process, removed at exit.
enum FuzzScratch {
    static let directory: String = {
        var template = Array("/tmp/cairn-fuzz.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { fatalError("mkdtemp: \(String(cString: strerror(errno)))") }
        let path = String(cString: made)
        atexit { _ = try? FileManager.default.removeItem(atPath: FuzzScratch.directory) }
        return path
    }()
}
