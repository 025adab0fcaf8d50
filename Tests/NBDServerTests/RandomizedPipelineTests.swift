import CairnTestSupport
import NBDProtocol
import NBDServer
import NIOCore
import Testing

/// Pipelined random writes and reads in every reply style, checked against a model of the disk.
/// Reproduce a failure by adding the printed seed to the arguments.
@Suite("randomized pipelines")
struct RandomizedPipelineTests {
    static let size = 4 << 20
    static let slot = 64 << 10

    @Test(
        "random pipelined batches match the model",
        arguments: [UInt64.random(in: 1...UInt64.max), 7, 8, 9]
    )
    func pipeline(seed: UInt64) async throws {
        let export = MemoryExport(name: "disk", size: UInt64(Self.size))
        try await withServer([export]) { server, _ in
            let failures = try await blocking { try Self.run(seed: seed, port: server.port) }
            #expect(failures.isEmpty, "seed \(seed): \(failures.prefix(5))")
        }
    }

    /// Batches of only writes (to distinct 64 KiB slots, so completion order cannot matter) or only reads.
    static func run(seed: UInt64, port: Int) throws -> [String] {
        var random = SeededGenerator(seed: seed)
        let style = [NBDReplyStyle.simple, .structured, .extended][Int(seed % 3)]
        let extended = style == .extended
        let client = try RawClient(port: port)
        try client.handshake(export: "disk", structured: style != .simple, extended: extended)
        var model = [UInt8](repeating: 0, count: size)
        var failures: [String] = []
        var cookie: UInt64 = 0
        for _ in 0..<24 {
            var reads: [UInt64: (offset: Int, length: Int)] = [:]
            var writes: Set<UInt64> = []
            var slots = Array(0..<(size / slot))
            let writing = random.next(2) == 0
            for _ in 0..<(1 + random.next(16)) {
                cookie += 1
                if writing {
                    let chosen = slots.remove(at: random.next(slots.count))
                    let length = 1 + random.next(slot)
                    let offset = chosen * slot + random.next(slot - length + 1)
                    let byte = UInt8(1 + random.next(255))
                    model.replaceSubrange(offset..<offset + length, with: repeatElement(byte, count: length))
                    try client.sendRequest(
                        .write,
                        cookie: cookie,
                        offset: UInt64(offset),
                        length: UInt64(length),
                        payload: ByteBuffer(repeating: byte, count: length),
                        extended: extended
                    )
                    writes.insert(cookie)
                } else {
                    let length = 1 + random.next(2 * slot)
                    let offset = random.next(size - length + 1)
                    try client.sendRequest(
                        .read,
                        cookie: cookie,
                        offset: UInt64(offset),
                        length: UInt64(length),
                        extended: extended
                    )
                    reads[cookie] = (offset, length)
                }
            }
            let results = try receive(client, style: style, reads: reads, writes: writes)
            for (cookie, bytes) in results {
                let (offset, length) = reads[cookie]!
                if bytes != Array(model[offset..<offset + length]) {
                    failures.append("read \(cookie) at \(offset)+\(length) differs")
                }
            }
        }
        return failures
    }

    /// Collects every reply of a batch, reassembling chunked reads by offset.
    static func receive(
        _ client: RawClient,
        style: NBDReplyStyle,
        reads: [UInt64: (offset: Int, length: Int)],
        writes: Set<UInt64>
    ) throws -> [UInt64: [UInt8]] {
        var data: [UInt64: [UInt8]] = reads.mapValues { [UInt8](repeating: 0, count: $0.length) }
        var outstanding = Set(reads.keys).union(writes)
        while !outstanding.isEmpty {
            if style == .simple {
                let reply = try client.receiveSimpleReply()
                try check(reply.error == 0, "request \(reply.cookie) failed")
                if let read = reads[reply.cookie] {
                    data[reply.cookie] = Array(try client.receive(read.length).readableBytesView)
                }
                outstanding.remove(reply.cookie)
                continue
            }
            let reply = try client.receiveReply()
            guard case .chunk(var chunk) = reply else {
                // Structured replies may answer a successful WRITE with a simple reply.
                if case .simple(let error, let cookie) = reply {
                    try check(error == 0 && writes.contains(cookie), "unexpected simple reply to \(cookie)")
                    outstanding.remove(cookie)
                }
                continue
            }
            try check(!chunk.type.isError, "request \(chunk.cookie) failed")
            if let read = reads[chunk.cookie], chunk.type == .offsetData {
                let offset = Int(chunk.payload.readInteger(as: UInt64.self)!) - read.offset
                let bytes = Array(chunk.payload.readableBytesView)
                data[chunk.cookie]!.replaceSubrange(offset..<offset + bytes.count, with: bytes)
            }
            if chunk.flags.contains(.done) { outstanding.remove(chunk.cookie) }
        }
        return data
    }
}
