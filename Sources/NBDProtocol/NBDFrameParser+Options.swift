import NIOCore

extension NBDFrameParser {
    /// Parses one `IHAVEOPT` frame once all of its data has arrived.
    mutating func nextOption() throws(NBDProtocolError) -> NBDOption? {
        guard var bytes = buffer, bytes.readableBytes >= FrameSize.optionHeader else { return nil }
        let start = bytes.readerIndex
        let magic = bytes.getInteger(at: start, as: UInt64.self)!
        guard magic == NBDMagic.option else {
            throw NBDProtocolError(.badOptionMagic, "option magic 0x\(String(magic, radix: 16)) is not IHAVEOPT")
        }
        let code = NBDOptionCode(rawValue: bytes.getInteger(at: start + 8, as: UInt32.self)!)
        let length = bytes.getInteger(at: start + 12, as: UInt32.self)!
        guard length <= maximumOptionDataLength else {
            throw NBDProtocolError(.optionTooLarge, "\(code) carries \(length) bytes of data")
        }
        guard bytes.readableBytes >= FrameSize.optionHeader + Int(length) else { return nil }
        bytes.moveReaderIndex(forwardBy: FrameSize.optionHeader)
        let data = bytes.readSlice(length: Int(length))!
        buffer = bytes
        return Self.parseOption(code: code, data: data)
    }

    /// Turns option data into its typed form (proto.md "Option types").
    static func parseOption(code: NBDOptionCode, data: ByteBuffer) -> NBDOption {
        var data = data
        switch code {
        case .exportName:
            guard let name = data.readNBDString(length: data.readableBytes) else {
                return .malformed(code, reason: "export name is not a valid string")
            }
            return .exportName(name)
        case .abort:
            return .abort
        case .list, .startTLS, .structuredReply, .extendedHeaders:
            guard data.readableBytes == 0 else {
                return .malformed(code, reason: "\(code) takes no data, got \(data.readableBytes) bytes")
            }
            switch code {
            case .list: return .list
            case .startTLS: return .startTLS
            case .structuredReply: return .structuredReply
            default: return .extendedHeaders
            }
        case .info, .go:
            guard let request = parseInfoRequest(&data) else {
                return .malformed(code, reason: "\(code) data does not match its layout")
            }
            return code == .go ? .go(request) : .info(request)
        case .listMetaContext, .setMetaContext:
            guard let request = parseMetaContextRequest(&data) else {
                return .malformed(code, reason: "\(code) data does not match its layout")
            }
            return code == .setMetaContext ? .setMetaContext(request) : .listMetaContext(request)
        default:
            return .unknown(code)
        }
    }

    /// name length (32), name, request count (16), requests (16 each); nothing may follow.
    private static func parseInfoRequest(_ data: inout ByteBuffer) -> NBDInfoRequest? {
        guard let nameLength = data.readInteger(as: UInt32.self),
            let name = data.readNBDString(length: Int(nameLength)),
            let count = data.readInteger(as: UInt16.self),
            data.readableBytes == Int(count) * 2
        else { return nil }
        var requests: [NBDInfoType] = []
        requests.reserveCapacity(Int(count))
        for _ in 0..<count {
            requests.append(NBDInfoType(rawValue: data.readInteger(as: UInt16.self)!))
        }
        return NBDInfoRequest(exportName: name, requests: requests)
    }

    /// name length (32), name, query count (32), then (length 32, query) per query; nothing may follow.
    private static func parseMetaContextRequest(_ data: inout ByteBuffer) -> NBDMetaContextRequest? {
        guard let nameLength = data.readInteger(as: UInt32.self),
            let name = data.readNBDString(length: Int(nameLength)),
            let count = data.readInteger(as: UInt32.self),
            // Each query needs at least its 4-byte length: refuse counts the data cannot hold.
            UInt64(count) * 4 <= UInt64(data.readableBytes)
        else { return nil }
        var queries: [String] = []
        for _ in 0..<count {
            guard let length = data.readInteger(as: UInt32.self),
                let query = data.readNBDString(length: Int(length))
            else { return nil }
            queries.append(query)
        }
        guard data.readableBytes == 0 else { return nil }
        return NBDMetaContextRequest(exportName: name, queries: queries)
    }
}

extension ByteBuffer {
    /// Reads a protocol string: valid UTF-8, no NUL, at most `NBDLimits.maximumStringLength` bytes
    /// (proto.md "Conventions"). Returns nil, consuming nothing, when any of that fails.
    mutating func readNBDString(length: Int) -> String? {
        guard length >= 0, length <= NBDLimits.maximumStringLength, length <= readableBytes,
            let bytes = getBytes(at: readerIndex, length: length),
            !bytes.contains(0),
            let string = String(validating: bytes, as: UTF8.self)
        else { return nil }
        moveReaderIndex(forwardBy: length)
        return string
    }
}
