import Foundation
import NBDProtocol
import NIOCore

/// A deliberately dumb blocking TCP client for speaking raw (and wrong) NBD to the server.
///
/// `@unchecked Sendable`: a test uses one client from one blocking closure at a time (see `blocking`), so
/// the file descriptor is never touched concurrently.
final class RawClient: @unchecked Sendable {
    enum Failure: Error { case connect(Int32), closed, timeout, unexpected(String) }

    let fd: Int32

    init(port: Int, timeout: Double = 5) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Foundation.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            close(fd)
            throw Failure.connect(errno)
        }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func send(_ buffer: ByteBuffer) throws {
        let bytes = Array(buffer.readableBytesView)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes {
                Foundation.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard n > 0 else { throw Failure.closed }
            sent += n
        }
    }

    /// Exactly `count` bytes, or `.closed` / `.timeout`.
    func receive(_ count: Int) throws -> ByteBuffer {
        var bytes = [UInt8](repeating: 0, count: count)
        var received = 0
        while received < count {
            let n = bytes[received...].withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { throw Failure.closed }
            if n < 0 { throw errno == EAGAIN || errno == EWOULDBLOCK ? Failure.timeout : Failure.closed }
            received += n
        }
        return ByteBuffer(bytes: bytes)
    }

    /// True if the server closed the connection (EOF or reset) before sending anything more.
    func isClosedByServer() -> Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, 0)
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    }

    /// Closes the write side only (the client "vanishes" mid-frame but can still see what the server does).
    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    // MARK: NBD helpers

    /// Reads the greeting and answers with `flags`.
    func greet(flags: NBDClientFlags = [.fixedNewstyle, .noZeroes]) throws {
        var greeting = try receive(18)
        try check(greeting.readInteger(as: UInt64.self) == NBDMagic.initPassword)
        var reply = ByteBuffer()
        reply.writeInteger(flags.rawValue)
        try send(reply)
    }

    func sendOption(_ code: NBDOptionCode, data: ByteBuffer = ByteBuffer()) throws {
        var buffer = ByteBuffer()
        buffer.writeInteger(NBDMagic.option)
        buffer.writeInteger(code.rawValue)
        buffer.writeInteger(UInt32(data.readableBytes))
        buffer.writeImmutableBuffer(data)
        try send(buffer)
    }

    /// A well-formed option, written by the client's own encoder (`writeNBDOption`, which the protocol
    /// tests check against the parser); `sendOption(_:data:)` stays for the malformed ones.
    func send(_ option: NBDOption) throws {
        var buffer = ByteBuffer()
        buffer.writeNBDOption(option)
        try send(buffer)
    }

    /// One option reply: (option, type, data).
    func receiveOptionReply() throws -> (option: UInt32, type: NBDOptionReplyType, data: ByteBuffer) {
        var header = try receive(20)
        try check(header.readInteger(as: UInt64.self) == NBDMagic.optionReply)
        let option = header.readInteger(as: UInt32.self)!
        let type = NBDOptionReplyType(rawValue: header.readInteger(as: UInt32.self)!)
        let length = Int(header.readInteger(as: UInt32.self)!)
        return (option, type, try receive(length))
    }

    /// Option replies up to and including the final one (ACK or an error).
    func receiveOptionReplies() throws -> [(type: NBDOptionReplyType, data: ByteBuffer)] {
        var replies: [(NBDOptionReplyType, ByteBuffer)] = []
        while true {
            let reply = try receiveOptionReply()
            replies.append((reply.type, reply.data))
            if reply.type == .ack || reply.type.isError { return replies }
        }
    }

    /// Negotiates (optionally) structured replies / extended headers and base:allocation, then GO.
    func handshake(export: String, structured: Bool = true, extended: Bool = false, metaContext: Bool = true) throws {
        try greet()
        if extended {
            try sendOption(.extendedHeaders)
            let replies = try receiveOptionReplies()
            try check(replies.last?.type == .ack)
        } else if structured {
            try sendOption(.structuredReply)
            let replies = try receiveOptionReplies()
            try check(replies.last?.type == .ack)
        }
        if metaContext && (structured || extended) {
            try send(.setMetaContext(NBDMetaContextRequest(exportName: export, queries: ["base:allocation"])))
            _ = try receiveOptionReplies()
        }
        try send(.go(NBDInfoRequest(exportName: export, requests: [])))
        let replies = try receiveOptionReplies()
        try check(replies.last?.type == .ack, "GO failed: \(replies.map(\.type))")
    }

    func sendRequest(
        _ type: NBDCommandType,
        flags: NBDCommandFlags = [],
        cookie: UInt64,
        offset: UInt64,
        length: UInt64,
        payload: ByteBuffer? = nil,
        extended: Bool = false
    ) throws {
        var buffer = ByteBuffer()
        buffer.writeNBDRequestHeader(
            type: type, flags: flags, cookie: cookie, offset: offset, length: length, extendedHeaders: extended)
        if let payload { buffer.writeImmutableBuffer(payload) }
        try send(buffer)
    }

    /// A simple reply header: (error, cookie).
    func receiveSimpleReply() throws -> (error: UInt32, cookie: UInt64) {
        var header = try receive(16)
        try check(header.readInteger(as: UInt32.self) == NBDMagic.simpleReply)
        return (header.readInteger()!, header.readInteger()!)
    }

    struct Chunk {
        var magic: UInt32
        var flags: NBDReplyFlags
        var type: NBDReplyType
        var cookie: UInt64
        var offset: UInt64?
        var payload: ByteBuffer
    }

    /// A simple reply header or a chunk, told apart by their magic (structured replies allow both).
    enum Reply {
        case simple(error: UInt32, cookie: UInt64)
        case chunk(Chunk)
    }

    func receiveReply() throws -> Reply {
        var magicBytes = try receive(4)
        let magic = magicBytes.readInteger(as: UInt32.self)!
        guard magic == NBDMagic.simpleReply else { return .chunk(try receiveChunk(magic: magic)) }
        var header = try receive(12)
        return .simple(error: header.readInteger()!, cookie: header.readInteger()!)
    }

    /// One structured (20-byte header) or extended (32-byte header) chunk, told apart by its magic.
    func receiveChunk() throws -> Chunk {
        var magicBytes = try receive(4)
        return try receiveChunk(magic: magicBytes.readInteger(as: UInt32.self)!)
    }

    private func receiveChunk(magic: UInt32) throws -> Chunk {
        if magic == NBDMagic.extendedReply {
            var header = try receive(28)
            let flags = NBDReplyFlags(rawValue: header.readInteger()!)
            let type = NBDReplyType(rawValue: header.readInteger()!)
            let cookie: UInt64 = header.readInteger()!
            let offset: UInt64 = header.readInteger()!
            let length: UInt64 = header.readInteger()!
            return Chunk(
                magic: magic,
                flags: flags,
                type: type,
                cookie: cookie,
                offset: offset,
                payload: try receive(Int(length))
            )
        }
        try check(magic == NBDMagic.structuredReply, "unexpected reply magic 0x\(String(magic, radix: 16))")
        var header = try receive(16)
        let flags = NBDReplyFlags(rawValue: header.readInteger()!)
        let type = NBDReplyType(rawValue: header.readInteger()!)
        let cookie: UInt64 = header.readInteger()!
        let length: UInt32 = header.readInteger()!
        return Chunk(
            magic: magic,
            flags: flags,
            type: type,
            cookie: cookie,
            offset: nil,
            payload: try receive(Int(length))
        )
    }

    /// Chunks up to and including the one with DONE.
    func receiveChunks() throws -> [Chunk] {
        var chunks: [Chunk] = []
        repeat { chunks.append(try receiveChunk()) } while !chunks.last!.flags.contains(.done)
        return chunks
    }
}

/// Runs blocking socket work off Swift's cooperative pool, which has only as many threads as cores.
func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
    }
}

/// A protocol expectation inside a raw client exchange. Throws instead of trapping: a trap would kill the
/// whole test process (every suite's results with it) when a loaded machine reorders replies.
func check(
    _ condition: Bool, _ message: @autoclosure () -> String = "unexpected answer from the server",
    fileID: String = #fileID, line: Int = #line
) throws {
    guard condition else { throw RawClient.Failure.unexpected("\(fileID):\(line): \(message())") }
}
