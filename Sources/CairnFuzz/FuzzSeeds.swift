import CairnArchive
import ISCSIProtocol
import Foundation
import MirrorProtocol
import NIOCore

/// Seed inputs for each target, made by the real encoders (`cairn-fuzz --write-seeds DIRECTORY`), so the
/// fuzzer starts from streams a real peer sends rather than from nothing. `Fuzz/corpus/` holds them.
public enum FuzzSeeds {
    public static func write(to directory: String) throws {
        for (target, seeds) in try all() {
            let folder = directory + "/" + target
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for (name, bytes) in seeds {
                let path = folder + "/" + name
                guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
                    throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
                }
            }
        }
    }

    static func all() throws -> [(String, [(String, [UInt8])])] {
        [
            ("nbd-handshake", handshakeSeeds()),
            ("nbd-transmission", transmissionSeeds()),
            ("mirror-frames", mirrorSeeds()),
            ("archive-reader", try archiveSeeds()),
            ("serve-config", configSeeds()),
            ("iscsi-pdus", iscsiSeeds()),
        ]
    }

    /// Odd first byte: framed options (code, 16-bit length, data) as the target reads them.
    static func handshakeSeeds() -> [(String, [UInt8])] {
        func option(_ code: UInt8, _ data: [UInt8]) -> [UInt8] {
            [code, UInt8(data.count >> 8), UInt8(data.count & 0xFF)] + data
        }
        func string(_ text: String) -> [UInt8] {
            let bytes = Array(text.utf8)
            return [0, 0, 0, UInt8(bytes.count)] + bytes
        }
        let go = string("fuzz") + [0, 0]
        let meta = string("fuzz") + [0, 0, 0, 1] + string("base:allocation")
        return [
            ("structured-go", [1] + option(8, []) + option(10, meta) + option(7, go)),
            ("extended-info-go", [1] + option(11, []) + option(6, go) + option(7, go)),
            ("list-abort", [1] + option(3, []) + option(9, meta) + option(2, [])),
            ("export-name", [1] + option(1, Array("fuzz".utf8))),
            ("raw-flags-only", [0, 0, 0, 0, 3]),
        ]
    }

    /// First byte: bit 0 extended headers, bit 1 the snapshot; then (type, flags, offset/512, offset
    /// step, 32-bit length, payload) per request.
    static func transmissionSeeds() -> [(String, [UInt8])] {
        func request(_ type: UInt8, flags: UInt16 = 0, sector: UInt16, length: UInt32, payload: UInt8? = nil) -> [UInt8] {
            var bytes: [UInt8] = [type, UInt8(flags >> 8), UInt8(flags & 0xFF), UInt8(sector >> 8), UInt8(sector & 0xFF), 0]
            bytes += [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
            if let payload { bytes += [UInt8](repeating: payload, count: Int(length)) }
            return bytes
        }
        let mixed = request(1, sector: 8, length: 4096, payload: 0x5A) + request(0, sector: 8, length: 8192)
            + request(3, sector: 0, length: 0) + request(4, sector: 16, length: 65536)
            + request(6, flags: 2, sector: 2048, length: 4096) + request(7, sector: 0, length: 1 << 20)
            + request(0, flags: 4, sector: 0, length: 4096) + request(5, sector: 0, length: 4096)
        return [
            ("mixed-structured", [0] + mixed),
            ("mixed-extended", [1] + mixed),
            ("snapshot-reads", [2] + request(0, sector: 2048, length: 65536) + request(7, sector: 0, length: 1 << 24)),
            ("fua-write-flush", [0] + request(1, flags: 1, sector: 100, length: 512, payload: 1) + request(3, sector: 0, length: 0)),
            ("copy-and-write", [0] + [0xF0, 0, 0, 0, 64, 0, 0, 0, 0, 32] + [UInt8](repeating: 0, count: 16) + [UInt8](repeating: 7, count: 16)),
            ("resize-disconnect", [0] + request(8, sector: 0, length: 0) + request(2, sector: 0, length: 0)),
        ]
    }

    static func mirrorSeeds() -> [(String, [UInt8])] {
        func frame(_ command: MirrorCommand, _ payload: ByteBuffer, flags: MirrorFrameFlags = []) -> [UInt8] {
            var buffer = ByteBuffer()
            buffer.writeMirrorFrame(MirrorFrame(command: command, flags: flags, messageID: 1, payload: payload))
            return Array(buffer.readableBytesView)
        }
        let generations = MirrorGenerations(pairID: 42, synced: 1, current: 2)
        let establish = MirrorEstablishRequest(
            volume: "vol", size: 1 << 30, chunkSize: 65536, generations: generations, requiredBytes: 1 << 20,
            options: [.create, .initial])
        var data = ByteBuffer()
        data.writeBytes([UInt8](repeating: 0xAB, count: 4096))
        return [
            ("challenge", frame(.challenge, MirrorChallenge(nonce: [UInt8](repeating: 1, count: MirrorLimits.nonceLength)).payload)),
            ("hello", frame(.hello, MirrorHello(
                proof: [UInt8](repeating: 2, count: MirrorLimits.proofLength), node: "primary",
                nonce: [UInt8](repeating: 3, count: MirrorLimits.nonceLength)).payload)),
            ("establish", frame(.establish, establish.payload)),
            ("write-then-flush", frame(.write, MirrorWriteHeader.payload(handle: 1, offset: 8192, data: data))
                + frame(.flush, ByteBuffer()) + frame(.trim, MirrorRange(handle: 1, offset: 0, length: 4096).payload)),
        ]
    }

    static func archiveSeeds() throws -> [(String, [UInt8])] {
        func archive(kind: ArchiveHeader.Kind, records: (ArchiveWriter) throws -> Void) throws -> [UInt8] {
            let memory = MemoryArchive()
            let header = ArchiveHeader(
                archiveID: "seed-\(kind.rawValue)", kind: kind, baseArchiveID: kind == .full ? nil : "seed-full",
                chainIndex: kind == .full ? 0 : 1, volume: "vol", volumeSize: 1 << 20, chunkSize: 65536,
                method: "mirror", splitAt: "2026-01-01T00:00:00Z", drain: "drained", sessionsAtSplit: 1)
            let writer = try ArchiveWriter(output: memory, header: header)
            try records(writer)
            _ = try writer.finish()
            return memory.bytes
        }
        let pattern = [UInt8](repeating: 0x3C, count: 8192)
        return [
            ("full", try archive(kind: .full) { writer in
                try pattern.withUnsafeBytes { try writer.appendData(offset: 0, bytes: $0) }
                try writer.appendZero(offset: 65536, length: 65536)
            }),
            ("incremental-empty", try archive(kind: .incremental) { _ in }),
        ]
    }

    /// First byte: decoder settings (bit 0 header digest, bit 1 data digest, bit 2 the large segment size).
    static func iscsiSeeds() -> [(String, [UInt8])] {
        var login = ISCSIPDU(
            opcode: .loginRequest,
            data: ISCSITextParameters.encode([
                ("InitiatorName", "iqn.2026-12.dev.cairn:fuzz"), ("TargetName", "iqn.2026-12.dev.cairn:fuzz"),
                ("SessionType", "Normal"), ("AuthMethod", "CHAP,None"), ("CHAP_A", "5"),
            ]))
        login.flags = 0x81
        var discovery = ISCSIPDU(
            opcode: .loginRequest,
            data: ISCSITextParameters.encode([
                ("InitiatorName", "iqn.2026-12.dev.cairn:fuzz"), ("SessionType", "Discovery"), ("AuthMethod", "None"),
                ("HeaderDigest", "CRC32C,None"), ("DataDigest", "None"), ("MaxRecvDataSegmentLength", "262144"),
            ]))
        discovery.flags = 0x87
        var nop = ISCSIPDU(opcode: .nopOut, data: ByteBuffer(bytes: [1, 2, 3]))
        nop.isImmediate = true
        func stream(_ settings: UInt8, _ pdus: [ISCSIPDU]) -> [UInt8] {
            [settings] + pdus.flatMap {
                Array($0.encoded(headerDigest: settings & 1 != 0, dataDigest: settings & 2 != 0).readableBytesView)
            }
        }
        return [
            ("chap-login", stream(0, [login])),
            ("discovery-login-nop", stream(4, [discovery, nop])),
            ("digests", stream(3, [login, nop])),
        ]
    }

    static func configSeeds() -> [(String, [UInt8])] {
        let full = """
            data_dir: /tmp/cairn-fuzz-config
            nbd:
              host: 127.0.0.1
              port: 10809
              idle_timeout: 300
            io:
              threads: 4
            log:
              level: info
            tls:
              mode: off
            api:
              port: 8080
            access:
              - exports: ["vol*"]
                clients: ["127.0.0.1"]
                mode: read-only
            """
        let services = """
            replication:
              host: 127.0.0.1
              port: 10810
              retries: 3
              timeout_ms: 5000
            iscsi:
              listen: 127.0.0.1:3260
              enabled: true
            rados:
              conf: /etc/ceph/ceph.conf
              id: admin
              pool: cairn
              lease_seconds: 10
            """
        return [
            ("full", Array(full.utf8)), ("services", Array(services.utf8)), ("empty", []),
            ("flow", Array("{nbd: {port: 0}, io: {threads: 2}}".utf8)),
        ]
    }
}
